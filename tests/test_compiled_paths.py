"""The formulations that compiled CUDA inference takes (``PaddedConv1d.compiled_channels_last``: a
channels-last conv2d; ``ConvNeXtBlock.compiled_taps``: the depthwise conv as shifted multiply-adds;
``AttnBlock.cuda_matmul_attention``: attention as two matmuls) compute the reference ops. Checked here on the CPU,
eager and through inductor's CPU code; tests/test_gpu.py checks a compiled codec on CUDA against eager."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from audiocodec.nn import ConvNeXtBlock, PaddedConv1d
from audiocodec.nn.conv import compiled_cuda_inference, depthwise_conv1d_taps, reduced_precision
from audiocodec.nn.split_bf16 import PRODUCTS
from audiocodec.nn.vocos import AttnBlock, ResBlock, matmul_attention


@pytest.mark.parametrize("k,padding,bias", [(7, 3, True), (3, 1, False), (5, 0, True), (1, 0, True)])
def test_depthwise_taps_equal_the_depthwise_conv(k, padding, bias):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 37)
    w, b = torch.randn(6, 1, k), (torch.randn(6) if bias else None)
    ref = F.conv1d(x, w, b, padding=padding, groups=6)
    out = depthwise_conv1d_taps(x, w, b, padding)
    assert out.shape == ref.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_depthwise_taps_take_the_dtype_of_the_conv_under_autocast():
    torch.manual_seed(0)
    block = ConvNeXtBlock(8, 16, 0.1).eval()
    x = torch.randn(2, 8, 30)
    conv = block.dwconv
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = conv(x)
        out = depthwise_conv1d_taps(x, conv.weight, conv.bias, conv.padding[0])
    assert out.dtype == ref.dtype == torch.bfloat16
    # the taps round once (fp32 sums); the conv rounds its inputs to bf16 first
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)


def test_depthwise_taps_compile_to_the_same_values():
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 16, 50), torch.randn(16, 1, 7), torch.randn(16)
    compiled = torch.compile(depthwise_conv1d_taps, dynamic=False)
    torch.testing.assert_close(compiled(x, w, b, 3), F.conv1d(x, w, b, padding=3, groups=16), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal,mode", list(itertools.product([False, True], ["reflect", "constant", "replicate"])))
def test_channels_last_conv_equals_padded_conv(causal, mode):
    torch.manual_seed(0)
    for c_in, c_out, k, s, d, g in [(4, 6, 7, 1, 1, 1), (4, 6, 3, 1, 3, 1), (1, 8, 7, 1, 1, 1), (4, 4, 4, 2, 1, 2),
                                    (6, 6, 10, 5, 1, 1)]:
        conv = PaddedConv1d(c_in, c_out, k, stride=s, dilation=d, groups=g, causal=causal, pad_mode=mode).eval()
        x = torch.randn(2, c_in, 41)
        PaddedConv1d.cpu_time_major = False  # the reference: pad, then nn.Conv1d
        try:
            with torch.no_grad():
                ref = conv(x)
                out = conv._forward_channels_last(x)
        finally:
            PaddedConv1d.cpu_time_major = True
        assert out.shape == ref.shape
        assert out.stride(1) == 1  # a time-major view: the next conv takes it without a transpose
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_the_compiled_cuda_paths_apply_only_where_meant():
    x = torch.randn(1, 2, 8)
    assert not compiled_cuda_inference(x)  # CPU, eager
    assert not reduced_precision(x) and reduced_precision(x.bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert reduced_precision(x)

    seen = []

    def probe(t):
        seen.append(compiled_cuda_inference(t))
        return t + 1

    torch.compile(probe, backend="eager")(x)
    assert seen == [False]  # being compiled, but not for CUDA


def test_matmul_attention_equals_sdpa():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 40, 24) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(matmul_attention(q, k, v), ref, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = matmul_attention(q, k, v)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=3e-2, atol=3e-2)
    with pytest.raises(AssertionError):  # the check can fail: another attention (no scaling) is told apart
        torch.testing.assert_close(torch.softmax(q @ k.transpose(1, 2), -1) @ v, ref, rtol=1e-3, atol=1e-3)
    q, k, v = (30 * torch.randn(1, 16, 768) for _ in range(3))  # unscaled fp16 scores would pass 65504
    assert not torch.isfinite(q.half() @ k.half().transpose(1, 2)).all()
    assert torch.isfinite(matmul_attention(q.half(), k.half(), v.half())).all()


def test_pos_net_convs_are_the_official_zero_padded_convs():
    """The pos_net's convs are PaddedConv1d (so that they take the convs' inference paths) computing what the
    official ``nn.Conv1d(..., padding=k // 2)`` computes, eager and on the CPU's time-major path."""
    torch.manual_seed(0)
    block, attn = ResBlock(64, dropout=0.0).eval(), AttnBlock(64).eval()  # GroupNorm: 32 groups
    x = torch.randn(2, 64, 30)

    def official_res(x):
        h = F.conv1d(F.silu(block.norm1(x)), block.conv1.weight, block.conv1.bias, padding=1)
        return x + F.conv1d(F.silu(block.norm2(h)), block.conv2.weight, block.conv2.bias, padding=1)

    def official_attn(x):
        h = attn.norm(x)
        q, k, v = (F.conv1d(h, c.weight, c.bias).transpose(1, 2) for c in (attn.q, attn.k, attn.v))
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        return x + F.conv1d(h, attn.proj_out.weight, attn.proj_out.bias)

    for grad in (True, False):  # training path; inference (time-major convs on the CPU)
        with torch.set_grad_enabled(grad):
            torch.testing.assert_close(block(x), official_res(x), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(attn(x), official_attn(x), rtol=1e-5, atol=1e-5)


def test_the_compiled_cuda_formulations_decode_as_eager_through_inductor(monkeypatch):
    """The decoder as compiled for CUDA inference in bf16 (the depthwise convs as taps, every conv, the pos_net's
    too, as a channels-last conv2d), here through inductor's CPU code with the compiled-CUDA test made true for CPU
    tensors: the eager decode's audio up to bf16 rounding. Catches a formulation's shape, layout or padding error
    before GPU time (tests/test_gpu.py runs the real thing)."""
    import audiocodec
    from audiocodec.nn import conv, vocos
    from helpers import probe_compiled_paths, synth_audio
    traced = probe_compiled_paths(monkeypatch)

    def compiled_inference(x):
        return torch.compiler.is_compiling() and not torch.is_grad_enabled()

    monkeypatch.setattr(conv, "compiled_cuda_inference", compiled_inference)
    monkeypatch.setattr(vocos, "compiled_cuda_inference", compiled_inference)
    torch.manual_seed(0)
    codec = audiocodec.build_codec("wavtokenizer-75").prepare_for_inference()
    codes = codec.encode(synth_audio(0.5, seed=3))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = codec.decode(codes).float()
        codec.compile(dynamic=False, cpu_fast_paths=False)
        out = codec.decode(codes).float()
    assert out.shape == ref.shape
    assert (out - ref).norm() / ref.norm() < 3e-2  # a wrong tap, layout or padding: O(1)
    assert "taps" in traced and "channels_last" in traced
    pos_net = codec.decoder.backbone.pos_net
    assert traced.count("channels_last") >= 1 + sum(isinstance(m, conv.PaddedConv1d) for m in pos_net.modules())


@pytest.mark.parametrize("parts,tol", [(3, 1e-6), (2, 1e-4)])
def test_split_bf16_gemms_compute_the_backbone_through_inductor(monkeypatch, parts, tol):
    """VocosBackbone.cuda_split_bf16_gemms (the blocks' MLPs as bf16 GEMMs of split operands; here an fp32 GEMM of
    the same bf16 parts) through inductor's CPU code with the compiled-CUDA test made true for CPU tensors: the fp32
    output to the split's accuracy (3 parts: fp32 rounding); the operands' graph break leaves every block in one
    graph (a break inside the blocks' loop would leave them uncompiled); the operands are rebuilt when a weight
    changes. tests/test_gpu.py runs the real thing."""
    from audiocodec.nn import vocos

    def compiled_inference(x):
        return torch.compiler.is_compiling() and not torch.is_grad_enabled()

    monkeypatch.setattr(vocos, "compiled_cuda_inference", compiled_inference)
    monkeypatch.setattr(vocos.VocosBackbone, "cuda_split_bf16_gemms", True)
    monkeypatch.setattr(vocos.VocosBackbone, "cuda_split_bf16_convs", False)   # the GEMMs alone
    monkeypatch.setattr(vocos.VocosBackbone, "split_bf16_parts", parts)
    monkeypatch.setattr(vocos.ConvNeXtBlock, "compiled_taps", False)
    torch.manual_seed(0)
    backbone = vocos.VocosBackbone(16, 64, 192, num_layers=3).eval()
    x = torch.randn(2, 16, 40)
    graphs = []

    def count_mms(gm, inputs):   # a dynamo backend that notes each graph's matrix products, then runs inductor
        graphs.append(sum(n.target is torch.mm for n in gm.graph.nodes))
        from torch._inductor.compile_fx import compile_fx
        return compile_fx(gm, inputs)

    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    with torch.no_grad():
        compiled = torch.compile(backbone, backend=count_mms, dynamic=False)
        for _ in range(2):
            assert rel(compiled(x), backbone(x)) < tol
        assert max(graphs) == 2 * 3   # the three blocks' six split GEMMs in one graph
        cache = backbone.__dict__["_layout_cache"]
        operand = cache[f"split_bf16_{parts}_0"][1]
        assert operand.shape == (192, len(PRODUCTS[parts]) * 64) and operand.dtype == torch.bfloat16
        backbone.convnext[0].pwconv1.weight.mul_(2)   # a changed weight: new operands, the new output
        assert rel(compiled(x), backbone(x)) < tol and cache[f"split_bf16_{parts}_0"][1] is not operand


@pytest.mark.parametrize("parts,tol", [(3, 1e-6), (2, 1e-4)])
def test_split_bf16_convs_compute_the_backbone_through_inductor(monkeypatch, parts, tol):
    """VocosBackbone.cuda_split_bf16_convs (the input conv, the pos_net's convs and attention projections as bf16
    GEMMs of split im2col columns; here fp32 GEMMs of the same parts) with the MLPs' split, through inductor's CPU
    code as above: the output to the split's accuracy, every product in one graph, operands rebuilt when a conv's
    weight changes."""
    from audiocodec.nn import vocos

    monkeypatch.setattr(vocos, "compiled_cuda_inference", lambda x: torch.compiler.is_compiling()
                        and not torch.is_grad_enabled())
    monkeypatch.setattr(vocos.VocosBackbone, "cuda_split_bf16_gemms", True)
    monkeypatch.setattr(vocos.VocosBackbone, "cuda_split_bf16_convs", True)
    monkeypatch.setattr(vocos.VocosBackbone, "split_bf16_parts", parts)
    monkeypatch.setattr(vocos.ConvNeXtBlock, "compiled_taps", False)
    torch.manual_seed(0)
    backbone = vocos.VocosBackbone(16, 64, 192, num_layers=2, attention=True).eval()
    with torch.no_grad():
        for m in backbone.pos_net.modules():
            if isinstance(m, PaddedConv1d):  # the official init: non-zero biases
                m.bias.normal_(0, 0.1)
    x = torch.randn(2, 16, 40)
    graphs = []

    def count_products(gm, inputs):   # (matrix products, convolutions) of each graph
        graphs.append((sum(n.target is torch.mm for n in gm.graph.nodes),
                       sum(n.target in (torch.conv1d, F.conv1d) for n in gm.graph.nodes)))
        from torch._inductor.compile_fx import compile_fx
        return compile_fx(gm, inputs)

    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    with torch.no_grad():
        ref = backbone(x)
        compiled = torch.compile(backbone, backend=count_products, dynamic=False)
        assert rel(compiled(x), ref) < tol
        # 2 x 2 MLP GEMMs, the input conv, 4 x 2 pos_net convs, 4 projections: all split GEMMs, in one graph (the
        # convs left: the blocks' two depthwise ones)
        assert max(graphs) == (4 + 1 + 8 + 4, 2)
        backbone.pos_net[2].k.weight.mul_(2)   # a changed weight: new operands, the new output
        assert rel(compiled(x), backbone(x)) < tol and rel(backbone(x), ref) > 1e-3
        # past split_bf16_convs_max_frames (batch x time) the convs stay convs; the MLPs' GEMMs still split
        monkeypatch.setattr(vocos.VocosBackbone, "split_bf16_convs_max_frames", 2 * 40 - 1)
        graphs.clear()
        torch._dynamo.reset()
        assert rel(torch.compile(backbone, backend=count_products, dynamic=False)(x), backbone(x)) < 1e-5
        assert max(graphs) == (4, 1 + 8 + 4 + 2)
