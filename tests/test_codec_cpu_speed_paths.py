"""CPU inference fast paths (time-major convs, fused SEANet residual blocks, matmul VQ search, prepacked LM
projections) give the reference results: same codes, audio and logits within float rounding."""
import contextlib
import copy
import itertools

import pytest
import torch

import audiocodec
from audiocodec.nn import PaddedConv1d
from audiocodec.nn.seanet import SEANetResnetBlock
from audiocodec.quantize.vq import EuclideanCodebook, nearest_code


@contextlib.contextmanager
def reference_path():
    """Run the reference (layout-agnostic, unfused) code instead of the CPU fast paths."""
    PaddedConv1d.cpu_time_major = False
    try:
        yield
    finally:
        PaddedConv1d.cpu_time_major = True


def both(fn):
    """``fn()`` on the fast path and on the reference path, both without autograd."""
    with torch.inference_mode():
        fast = fn()
        with reference_path():
            ref = fn()
    return fast, ref


@pytest.mark.parametrize("causal,mode", list(itertools.product([False, True], ["reflect", "constant", "replicate"])))
def test_time_major_conv_equals_padded_conv(causal, mode):
    torch.manual_seed(0)
    for c_in, k, s, d in [(3, 7, 1, 1), (3, 3, 1, 3), (3, 1, 1, 1), (3, 4, 2, 1), (3, 10, 5, 1), (1, 7, 1, 1),
                          (1, 16, 8, 1)]:
        conv = PaddedConv1d(c_in, 4, k, stride=s, dilation=d, causal=causal, pad_mode=mode).eval()
        for length in (6, 4099):
            x = torch.randn(2, c_in, length)
            for inp in (x, x.transpose(1, 2).contiguous().transpose(1, 2)):  # either layout in
                fast, ref = both(lambda: conv(inp))
                assert fast.shape == ref.shape == (2, 4, -(-length // s))
                torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [3, 7])
@pytest.mark.parametrize("length", [8, 9, 11, 40, 375])
def test_winograd_conv_equals_the_conv(monkeypatch, k, length):
    """PaddedConv1d.cpu_winograd (zero-padded k=3 / k=7 convs by Winograd's F(4, 3) / F(2, 7)): the reference conv's
    output, lengths that fill the last tile or not, either input layout, the weight or bias changed in place; taken
    only where it applies."""
    from audiocodec.nn import conv as conv_mod
    calls = []
    original = conv_mod.winograd_conv
    monkeypatch.setattr(conv_mod, "winograd_conv", lambda *a: calls.append(a[-2]) or original(*a))
    monkeypatch.setattr(PaddedConv1d, "winograd_min_weights", 16 * 24)
    torch.manual_seed(0)
    conv = PaddedConv1d(16, 24, k, pad_mode="constant").eval()
    x = torch.randn(2, 16, length)
    for inp in (x, x.transpose(1, 2).contiguous().transpose(1, 2)):
        fast, ref = both(lambda: conv(inp))
        assert fast.shape == ref.shape == (2, 24, length) and fast.stride(1) == 1
        torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        conv.weight[:, :, 2].mul_(-3)
        conv.bias.add_(1)
    fast, ref = both(lambda: conv(x))
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    assert calls == [conv_mod.WINOGRAD_TILES[k][0]] * 3
    narrow = PaddedConv1d(16, 8, k, pad_mode="constant").eval()   # below winograd_min_weights
    reflect = PaddedConv1d(16, 24, k, pad_mode="reflect").eval()
    strided = PaddedConv1d(16, 24, k, stride=2, pad_mode="constant").eval()
    both(lambda: (narrow(x), reflect(x), strided(x)))
    assert len(calls) == 3


def test_winograd_filters_are_cached_per_tile():
    """Two tiles of the same size over different points on one conv each use their own transformed filters."""
    from fractions import Fraction
    from audiocodec.nn.conv import winograd_conv
    torch.manual_seed(0)
    conv = PaddedConv1d(16, 24, 3, pad_mode="constant").eval()
    x = torch.randn(1, 16, 23)
    with torch.inference_mode():
        ref = torch.nn.functional.conv1d(x, conv.weight, conv.bias, padding=1)
        for points in [(0, 1, -1, 2, -2), (0, 1, -1, Fraction(1, 2), Fraction(-1, 2))]:
            torch.testing.assert_close(winograd_conv(x, conv, conv.weight, conv.bias, 4, points), ref,
                                       atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal,mode", [(False, "reflect"), (True, "constant"), (False, "replicate")])
def test_polyphase_strided_conv_equals_the_conv(monkeypatch, causal, mode):
    """PaddedConv1d.cpu_polyphase (a strided conv of kernel n strides as n GEMMs over frames of stride samples):
    the reference conv's output for n = 2 and 3, lengths that fill the last frame or not, a batch, either input
    layout, a weight changed in place; taken only where it applies."""
    calls = []
    original = PaddedConv1d._polyphase_conv
    monkeypatch.setattr(PaddedConv1d, "_polyphase_conv", lambda self, xp: calls.append(1) or original(self, xp))
    monkeypatch.setattr(PaddedConv1d, "polyphase_min_width", 64)
    torch.manual_seed(0)
    for k, s in [(8, 4), (12, 4)]:
        conv = PaddedConv1d(16, 24, k, stride=s, causal=causal, pad_mode=mode).eval()
        for length in (37, 40, 4099):  # 4099: past PaddedConv1d.long_input
            x = torch.randn(2, 16, length)
            for inp in (x, x.transpose(1, 2).contiguous().transpose(1, 2)):
                fast, ref = both(lambda: conv(inp))
                assert fast.shape == ref.shape == (2, 24, -(-length // s))
                torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            conv.weight[:, :, -1].mul_(-3)
        fast, ref = both(lambda: conv(x))
        torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    assert len(calls) == 2 * (3 * 2 + 1)
    x = torch.randn(1, 8, 40)
    narrow = PaddedConv1d(8, 24, 8, stride=4).eval()  # 4 x 8 < polyphase_min_width
    unstrided = PaddedConv1d(16, 24, 8).eval()
    both(lambda: (narrow(x), unstrided(torch.randn(1, 16, 40))))
    assert len(calls) == 14


@pytest.mark.parametrize("m,r,points", [(2, 3, (0, 1, -1)), (4, 3, (0, 1, -1, 2, -2)),
                                        (2, 7, (0, 1, -1, 2, -2, 0.5, -0.5))])
def test_winograd_matrices_compute_the_correlation(m, r, points):
    """A^T ((G g) * (B^T d)) is the correlation of a tile (fp64, to rounding); a wrong point count is refused."""
    from audiocodec.nn.conv import winograd_matrices
    at, g, bt = winograd_matrices(m, r, points)
    assert at.shape == (m, m + r - 1) and g.shape == (m + r - 1, r) and bt.shape == (m + r - 1, m + r - 1)
    gen = torch.Generator().manual_seed(0)
    d = torch.randn(m + r - 1, generator=gen, dtype=torch.float64)
    w = torch.randn(r, generator=gen, dtype=torch.float64)
    ref = torch.stack([(w * d[i:i + r]).sum() for i in range(m)])
    torch.testing.assert_close(at @ ((g @ w) * (bt @ d)), ref, atol=1e-12, rtol=1e-12)
    with pytest.raises(ValueError, match="finite points"):
        winograd_matrices(m, r, points[:-1])


def test_packed_linear_equals_the_linear_and_follows_weight_updates(monkeypatch):
    from audiocodec.nn.conv import PackedLinear
    monkeypatch.setattr(PackedLinear, "min_weights", 24 * 40)
    torch.manual_seed(0)
    layer, small = PackedLinear(24, 40).eval(), PackedLinear(24, 8, bias=False).eval()
    x = torch.randn(2, 3, 24)
    for _ in range(2):
        fast, ref = both(lambda: (layer(x), small(x)))
        for f, r in zip(fast, ref):
            torch.testing.assert_close(f, r, atol=1e-5, rtol=1e-5)
        assert "onednn_packed" in layer.__dict__["_layout_cache"] and "_layout_cache" not in small.__dict__
        with torch.no_grad():
            layer.weight.mul_(-2)   # the packed copy follows
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert layer(x).dtype == torch.bfloat16
    out = layer(x)   # training path: autograd through nn.Linear
    out.sum().backward()
    assert layer.weight.grad is not None


def test_transformer_lm_logits_on_the_cpu_path_equal_the_reference(monkeypatch):
    from audiocodec.lm.transformer import TransformerLM
    from audiocodec.nn.conv import PackedLinear
    monkeypatch.setattr(PackedLinear, "min_weights", 1)
    torch.manual_seed(0)
    lm = TransformerLM(vocab_size=50, dim=64, num_layers=2, num_heads=4, num_codebooks=2, cross_attention=True,
                       memory_dim=32).eval()
    tokens = torch.randint(0, 50, (2, 2, 9))
    memory = torch.randn(2, 5, 32)
    fast, ref = both(lambda: lm(tokens, memory=memory))
    assert fast.shape == (2, 2, 9, 50)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    assert any("_layout_cache" in m.__dict__ for m in lm.modules())   # the packed path ran


def test_time_major_weights_follow_parameter_updates():
    torch.manual_seed(0)
    conv = PaddedConv1d(4, 4, 3).eval()
    x = torch.randn(1, 4, 50)
    with torch.inference_mode():
        conv(x)  # fills the layout cache
    with torch.no_grad():
        conv.weight.mul_(2)
    fast, ref = both(lambda: conv(x))
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("true_skip", [False, True])
def test_fused_resnet_block_equals_reference(true_skip):
    torch.manual_seed(0)
    block = SEANetResnetBlock(8, norm="none", true_skip=true_skip).eval()
    x = torch.randn(2, 8, 300)
    fast, ref = both(lambda: block(x))
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    owned = x.clone()
    with torch.inference_mode():
        torch.testing.assert_close(block.forward_fused(owned, owned=True), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("adanorm,scale", [(None, 0.5), (4, 0.5), (None, 0.0)])
def test_time_major_convnext_block_equals_reference(adanorm, scale):
    """ConvNeXtBlock on the CPU inference path (residual stream time-major, channels-last depthwise conv): the
    reference block's output from either input layout, returned as a time-major view."""
    from audiocodec.nn import ConvNeXtBlock
    torch.manual_seed(0)
    block = ConvNeXtBlock(32, 96, scale, adanorm).eval()
    if adanorm:
        torch.nn.init.normal_(block.norm.scale.weight)
        torch.nn.init.normal_(block.norm.shift.weight)
    x = torch.randn(2, 32, 41)
    for inp in (x, x.transpose(1, 2).contiguous().transpose(1, 2)):
        fast, ref = both(lambda: block(inp, 3) if adanorm else block(inp))
        assert fast.shape == ref.shape and fast.stride(1) == 1
        torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(AssertionError):  # the check can fail: a one-sample shift of the depthwise conv
        torch.testing.assert_close(fast, torch.roll(ref, 1, -1), atol=1e-5, rtol=1e-5)
    if scale:   # a layer scale changed in place
        with torch.no_grad():
            block.gamma.mul_(-3)
        fast, ref = both(lambda: block(x, 3) if adanorm else block(x))
        torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


def test_nearest_code_is_the_euclidean_argmin():
    torch.manual_seed(0)
    x, embed = torch.randn(300, 16), torch.randn(512, 16)
    assert torch.equal(nearest_code(x, embed), torch.cdist(x, embed).argmin(-1))
    book = EuclideanCodebook(16, 512, kmeans_init=False)
    with torch.no_grad():
        book.embed.copy_(embed)
        assert torch.equal(book.encode(x), torch.cdist(x, embed).argmin(-1))
        book.embed.copy_(-embed)  # the cached |e|^2 follows the codebook
        assert torch.equal(book.encode(x), torch.cdist(x, -embed).argmin(-1))


TINY = {
    "wavtokenizer-75": dict(encoder={"n_filters": 8}, decoder={"backbone": {"dim": 64, "intermediate_dim": 128,
                                                                             "num_layers": 2}, "head": {"dim": 64}}),
    "encodec-24k": dict(encoder={"n_filters": 8}, decoder={"n_filters": 8}),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_codec_fast_path_equals_reference(name):
    torch.manual_seed(0)
    codec = audiocodec.build_codec(name, **TINY[name]).prepare_for_inference()
    wav = 0.1 * torch.randn(2, 1, 24000)
    with torch.no_grad():  # codebooks spread like this input's frames, so that the codes vary
        frames = codec.encoder(wav).transpose(1, 2).reshape(-1, codec.quantizer.layers[0].codebook.dim)
        for layer in codec.quantizer.layers:
            book = layer.codebook
            book.embed.copy_(torch.randn(book.codebook_size, book.dim) * frames.std(0) + frames.mean(0))
    fast_codes, ref_codes = both(lambda: codec.encode(wav).tokens)
    assert torch.equal(fast_codes, ref_codes)
    assert ref_codes.unique().numel() > 10
    fast, ref = both(lambda: codec.decode(ref_codes))
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-4)


def _tiny_decoder_codes(seed: int = 0):
    torch.manual_seed(seed)
    codec = audiocodec.build_codec("wavtokenizer-75", **TINY["wavtokenizer-75"]).prepare_for_inference()
    return codec, torch.randint(0, codec.quantizer.layers[0].codebook.codebook_size, (2, 1, 60))


def test_packed_vocos_linears_follow_weight_updates_and_copy():
    """The decoder's oneDNN-packed Linear weights are a cache: rebuilt after an in-place update, and a codec
    deep-copied after a CPU decode (the EMA weights of training do so) decodes like the original."""
    codec, codes = _tiny_decoder_codes()
    with torch.inference_mode():
        codec.decode(codes)  # fills the packed-weight caches
    with torch.no_grad():
        for block in codec.decoder.backbone.convnext:
            block.pwconv1.weight.mul_(1.5)
    fast, ref = both(lambda: codec.decode(codes))
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-4)
    twin = copy.deepcopy(codec)
    with torch.inference_mode():
        torch.testing.assert_close(twin.decode(codes), fast, atol=1e-6, rtol=1e-5)


def test_folded_attention_equals_the_four_projections_and_follows_weight_updates():
    """The pos_net attention's CPU path (q and k folded into one matrix, v into proj_out) computes the four
    projections' attention, biases included, and its folded weights follow in-place updates of any source."""
    from audiocodec.nn.vocos import AttnBlock
    torch.manual_seed(0)
    attn = AttnBlock(64).eval()
    with torch.no_grad():
        for conv in (attn.q, attn.k, attn.v, attn.proj_out):
            conv.weight.mul_(3)
            conv.bias.normal_()
    x = torch.randn(2, 64, 50)

    def check():  # the fast path's error against float64 is of the order of the fp32 reference's own
        fast, ref = both(lambda: attn(x))
        with torch.inference_mode(), reference_path():
            truth = copy.deepcopy(attn).double()(x.double())
        scale = truth.abs().max()
        assert (fast - truth).abs().max() / scale < 4e-6 and (ref - truth).abs().max() / scale < 4e-6
    check()
    for param in (attn.q.bias, attn.k.weight, attn.v.bias, attn.proj_out.weight):
        with torch.no_grad():
            param.add_(torch.randn_like(param))
        check()


def test_bf16_decode_fast_path_equals_reference_bf16():
    """Under CPU bf16 autocast the packed path computes the reference path's bf16 GEMMs (oneDNN both)."""
    codec, codes = _tiny_decoder_codes(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast, ref = both(lambda: codec.decode(codes))
    with torch.inference_mode():
        full = codec.decode(codes)
    noise = lambda a: float(((a - full) ** 2).mean() / (full ** 2).mean())  # noqa: E731
    assert noise(fast) < 1e-3 and noise(ref) < 1e-3   # both bf16-close to fp32 (> 30 dB)
    torch.testing.assert_close(fast, ref, atol=0.02 * float(full.abs().max()), rtol=0.05)
    dwconv = codec.decoder.backbone.convnext[0].dwconv   # its weight cast once, not by autocast on every call
    assert dwconv.__dict__["_layout_cache"]["w_cl_torch.bfloat16"][1].dtype == torch.bfloat16


def test_packed_encoder_convs_follow_weight_updates_and_copy():
    """The encoder convs' oneDNN-packed weights (and the VQ search's packed codebook) are caches: rebuilt after
    an in-place update, and a codec deep-copied after a CPU encode encodes like the original."""
    torch.manual_seed(0)
    codec = audiocodec.build_codec("wavtokenizer-75", **TINY["wavtokenizer-75"]).prepare_for_inference()
    wav = 0.1 * torch.randn(1, 1, 9000)  # long enough for the long-input path of the first layers
    with torch.inference_mode():
        codec.encoder(wav)  # fills the packed-weight caches
        codec.encode(wav)
    with torch.no_grad():
        for m in codec.encoder.modules():
            if isinstance(m, PaddedConv1d):
                m.weight.mul_(1.25)
        book = codec.quantizer.layers[0].codebook
        book.embed.copy_(torch.randn_like(book.embed) * 0.1)
    fast, ref = both(lambda: codec.encoder(wav))
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    fast_codes, ref_codes = both(lambda: codec.encode(wav).tokens)
    assert torch.equal(fast_codes, ref_codes)
    twin = copy.deepcopy(codec)
    with torch.inference_mode():
        torch.testing.assert_close(twin.encoder(wav), fast, atol=1e-6, rtol=1e-6)
        assert torch.equal(twin.encode(wav).tokens, fast_codes)


def test_pointwise_conv_add_into_equals_add():
    """``conv.add_into(out, x)`` is ``out.add_(conv(x))``: in place (oneDNN's fused add on the fast path, the
    same floats), and the plain add for inputs it does not take (channel-major ``out``)."""
    torch.manual_seed(0)
    conv = PaddedConv1d(8, 16, 1).eval()
    x = torch.randn(2, 300, 8).transpose(1, 2)
    for out in (torch.randn(2, 300, 16).transpose(1, 2), torch.randn(2, 16, 300)):
        expected = out + conv(x).detach()
        with torch.inference_mode():
            ptr = out.data_ptr()
            res = conv.add_into(out, x)
        assert res.data_ptr() == ptr
        torch.testing.assert_close(res, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("quantizer", [None, {"num_quantizers": 3, "codebook_size": 64, "codebook_dim": 8}])
def test_decoder_first_conv_by_code_table(monkeypatch, quantizer):
    """Codec.cpu_code_tables: the decoder's input conv of the code vectors as a table lookup computes the conv (one
    codebook; three, with the quantizer's output projection and its bias, decoded with all or fewer), edges included,
    closer to float64 than the fp32 conv; the tables follow codebook and conv updates, one per number of codebooks
    within the size limit together; over it, or under autograd, the conv runs."""
    torch.manual_seed(0)
    overrides = dict(TINY["wavtokenizer-75"], **({"quantizer": quantizer} if quantizer else {}))
    codec = audiocodec.build_codec("wavtokenizer-75", **overrides).prepare_for_inference()
    conv = codec.decoder.first_conv
    built = []
    make = audiocodec.codecs.base.conv_tables
    monkeypatch.setattr(audiocodec.codecs.base, "conv_tables", lambda *a: built.append(1) or make(*a))
    with torch.no_grad():
        for layer in codec.quantizer.layers:
            layer.codebook.embed.normal_()
        conv.bias.normal_()

    def check(tokens):
        with torch.inference_mode():
            fast = codec._first_conv_by_lookup(tokens)
            features = codec._embed(tokens)
            ref = conv(features)
            truth = torch.nn.functional.conv1d(features.double(), conv.weight.double(), conv.bias.double(), padding=3)
        assert fast.shape == ref.shape and fast.stride(1) == 1   # time-major, like the conv path's output
        scale = truth.abs().max()
        assert (fast - truth).abs().max() <= (ref - truth).abs().max() + 1e-6 * scale
        torch.testing.assert_close(fast, ref, atol=1e-5 * float(scale), rtol=1e-5)

    k = codec.max_codebooks
    tokens = torch.randint(0, codec.cardinality, (2, k, 40))
    check(tokens)
    check(tokens[..., :2])   # shorter than the kernel: every output reads padding
    assert len(built) == 1
    if k > 1:
        check(tokens[:, :2])   # fewer codebooks: another table, kept beside the first
        check(tokens)
        assert len(built) == 2
        # the weights change: both tables are stale and dropped; with room for one, the number of codebooks
        # decoded next gets a table, the other decodes by the conv
        with torch.no_grad():
            conv.bias.add_(1)
        first = (conv.kernel_size[0] * k * codec.cardinality + 2) * conv.out_channels * 4
        monkeypatch.setattr(codec, "code_table_max_bytes", first + 1000)
        check(tokens)
        assert len(built) == 3
        with torch.inference_mode():
            assert codec._first_conv_by_lookup(tokens[:, :2]) is None
        monkeypatch.setattr(codec, "code_table_max_bytes", audiocodec.codecs.base.Codec.code_table_max_bytes)
    with torch.no_grad():
        codec.quantizer.layers[0].codebook.embed.mul_(-2)
    check(tokens)
    with torch.no_grad():
        conv.weight.mul_(0.5)
    check(tokens)
    fast, ref = both(lambda: codec.decode(tokens))   # the whole decode through the table
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-4)
    count = len(built)
    monkeypatch.setattr(codec, "code_table_max_bytes", 1000)
    with torch.inference_mode():
        assert codec._first_conv_by_lookup(tokens) is None
    with torch.no_grad():
        codec.quantizer.layers[0].codebook.embed.mul_(-1)
    assert codec._first_conv_by_lookup(tokens) is None   # grad on
    with torch.inference_mode():   # a codec built in inference mode: its weights have no version to key a cache
        made_in_inference = audiocodec.build_codec("wavtokenizer-75", **overrides).prepare_for_inference()
        assert made_in_inference._first_conv_by_lookup(tokens) is None
    assert len(built) == count


def test_codec_compile_on_the_cpu_keeps_the_fast_paths_and_compiles_the_activations(monkeypatch):
    """Codec.compile() on the CPU: parts with eager fast paths of their own keep them (forward not replaced), the
    SEANet ELUs run through torch.compile (in place, as on the eager path): the same codes and audio as eager,
    up to float rounding; cpu_fast_paths=False compiles the parts whole."""
    from audiocodec.nn import seanet
    torch.manual_seed(0)
    codec = audiocodec.build_codec("encodec-24k", **TINY["encodec-24k"]).prepare_for_inference()
    wav = 0.1 * torch.randn(1, 1, 4800)
    with torch.inference_mode():
        ref_codes = codec.encode(wav).tokens
        ref = codec.decode(ref_codes)
    elus = []
    compiled = seanet._compiled_elu()
    monkeypatch.setattr(seanet, "_compiled_elu", lambda: lambda *a: elus.append(a[2]) or compiled(*a))
    assert codec.compile() is codec
    assert "forward" not in vars(codec.encoder) and "forward" not in vars(codec.decoder)   # not replaced
    assert codec.encoder.compiled_activations and codec.decoder.compiled_activations
    with torch.inference_mode():
        codes = codec.encode(wav).tokens
        out = codec.decode(ref_codes)
    assert torch.equal(codes, ref_codes)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    assert len(elus) == 2 * (4 * 3 + 1) and all(elus)   # 13 ELUs each way, all on tensors the path owns: in place
    whole = audiocodec.build_codec("encodec-24k", **TINY["encodec-24k"]).compile(cpu_fast_paths=False)
    assert "forward" in vars(whole.encoder) and "forward" in vars(whole.decoder)   # torch.compile'd
    assert not whole.encoder.compiled_activations
