"""The formulations that compiled CUDA inference takes (``PaddedConv1d.compiled_channels_last``: a
channels-last conv2d; ``ConvNeXtBlock.compiled_taps``: the depthwise conv as shifted multiply-adds) compute the
reference ops. Checked here on the CPU, eager and through inductor's CPU code; tests/test_gpu.py checks a
compiled codec on CUDA against eager."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from audiocodec.nn import ConvNeXtBlock, PaddedConv1d
from audiocodec.nn.conv import compiled_cuda_inference, depthwise_conv1d_taps, reduced_precision


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
