"""Discriminators: output structure, gradients, bf16, parameter counts vs the official arithmetic,
EnCodec MS-STFT parity, WavTokenizer checkpoint key mapping."""
from __future__ import annotations

import re
import warnings

import pytest
import torch

from audiocodec.discriminators import (DISCRIMINATORS, MultiDiscriminator, build_discriminator,
                                       load_official_discriminators)
from audiocodec.errors import ConfigError

# small configs of every type (same structure as the defaults, narrower convs where configurable)
SMALL = {
    "mpd": {"type": "mpd", "channels": [4, 8, 16, 16, 16]},
    "mrd": {"type": "mrd", "channels": 8, "resolutions": [[256, 64, 256], [512, 128, 512], [128, 32, 128]]},
    "msd": {"type": "msd", "channels": [16, 16, 32, 32, 32, 32, 32]},
    "msstft": {"type": "msstft", "filters": 4, "n_ffts": [256, 512, 128, 64, 32]},
    # bands >= 12 bins (PyTorch's CPU bf16 conv is wrong on 1-2 bin inputs, see multiband.py)
    "multiband": {"type": "multiband", "channels": 4, "fft_sizes": [512, 384, 256]},
    "dac": {"type": "dac", "channels": 4, "fft_sizes": [512, 384, 256], "period_channels": [4, 8, 16, 16, 16]},
}
# (number of sub-discriminators, feature maps of each)
STRUCTURE = {"mpd": [5] * 5, "mrd": [6] * 3, "msd": [8] * 3, "msstft": [5] * 5, "multiband": [25] * 3,
             "dac": [5] * 5 + [25] * 3}


pytestmark = pytest.mark.usefixtures("native_cpu_convs")


def _wav(batch=2, length=2400, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 24000
    return (0.5 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn(batch, 1, length, generator=g)).float()


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_registry_has_every_type():
    assert set(DISCRIMINATORS.names()) == set(SMALL)


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_structure_and_gradients(kind):
    torch.manual_seed(0)
    disc = build_discriminator(SMALL[kind])
    wav = _wav().requires_grad_(True)
    logits, fmaps = disc(wav)
    assert [len(f) for f in fmaps] == STRUCTURE[kind]
    assert len(logits) == len(STRUCTURE[kind])
    for lg in logits:
        assert lg.shape[:2] == (2, 1) and torch.isfinite(lg).all()
    loss = sum(lg.mean() for lg in logits) + sum(f.abs().mean() for fm in fmaps for f in fm)
    loss.backward()
    assert wav.grad is not None and wav.grad.abs().sum() > 0 and torch.isfinite(wav.grad).all()
    no_grad = [n for n, p in disc.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, no_grad


@pytest.mark.parametrize("kind", ["mpd", "mrd", "msstft", "multiband", "dac"])
def test_bf16_autocast(kind):
    torch.manual_seed(0)
    disc = build_discriminator(SMALL[kind])
    wav = _wav(batch=1).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, fmaps = disc(wav)
        loss = sum(lg.float().pow(2).mean() for lg in logits)
    loss.backward()
    assert all(torch.isfinite(lg.float()).all() for lg in logits)
    assert torch.isfinite(wav.grad).all()


def test_stft_stays_fp32_under_autocast():
    disc = build_discriminator(SMALL["mrd"]).discriminators[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert disc.spectrogram(_wav(batch=1)).dtype == torch.float32


# -- parameter counts: the official constructors' arithmetic -----------------------------------------
def _conv(c_in, c_out, k, groups=1, weight_norm=True):
    """Parameters of a conv: weight + bias (+ g of weight norm, one per output channel)."""
    n = 1
    for v in k:
        n *= v
    return c_in // groups * c_out * n + c_out + (c_out if weight_norm else 0)


def _official_mpd(num_embeddings=None):
    ch = [1, 32, 128, 512, 1024, 1024]
    per = sum(_conv(a, b, (5, 1)) for a, b in zip(ch, ch[1:])) + _conv(1024, 1, (3, 1))
    return 5 * (per + (num_embeddings or 0) * 1024)


def _official_mrd(num_embeddings=None):
    per = (_conv(1, 64, (7, 5)) + 2 * _conv(64, 64, (5, 3)) + 2 * _conv(64, 64, (3, 3)) + _conv(64, 1, (3, 3))
           + (num_embeddings or 0) * 64)
    return 3 * per


def _official_dac_mrd():
    band = _conv(2, 32, (3, 9)) + 3 * _conv(32, 32, (3, 9)) + _conv(32, 32, (3, 3))
    return 3 * (5 * band + _conv(32, 1, (3, 3)))


def _official_msd():
    layers = [(1, 128, 15, 1), (128, 128, 41, 4), (128, 256, 41, 16), (256, 512, 41, 16), (512, 1024, 41, 16),
              (1024, 1024, 41, 16), (1024, 1024, 5, 1), (1024, 1, 3, 1)]
    first = sum(_conv(a, b, (k,), g, weight_norm=False) for a, b, k, g in layers)   # spectral norm: no params
    rest = sum(_conv(a, b, (k,), g) for a, b, k, g in layers)
    return first + 2 * rest


def test_parameter_counts_match_official_arithmetic():
    with torch.device("meta"):
        counts = {k: _params(build_discriminator({"type": k})) for k in SMALL}
        mpd4 = _params(build_discriminator({"type": "mpd", "num_embeddings": 4}))
        mrd4 = _params(build_discriminator({"type": "mrd", "num_embeddings": 4}))
    assert counts["mpd"] == _official_mpd() == 41_105_770
    assert mpd4 == _official_mpd(4)
    assert counts["mrd"] == _official_mrd() == 600_198
    assert mrd4 == _official_mrd(4)
    assert counts["multiband"] == _official_dac_mrd()
    assert counts["dac"] == _official_mpd() + _official_dac_mrd()
    assert counts["msd"] == _official_msd()


def test_msstft_matches_encodec():
    msstftd = pytest.importorskip("encodec.msstftd")
    from audiocodec.codecs.interop.keys import load_state_strict, rename_keys
    torch.manual_seed(0)
    cfg = dict(n_ffts=[256, 512, 128], hop_lengths=[64, 128, 32], win_lengths=[256, 512, 128])
    with warnings.catch_warnings():  # encodec uses the deprecated torch.nn.utils.weight_norm
        warnings.simplefilter("ignore")
        ref = msstftd.MultiScaleSTFTDiscriminator(filters=8, **cfg)
    ours = build_discriminator({"type": "msstft", "filters": 8, **cfg})
    assert _params(ours) == _params(ref)
    load_state_strict(ours, rename_keys(ref.state_dict(), [(r"\.conv\.", "."), (r"spec_transform", None)]))
    wav = _wav(batch=1)
    (a, fa), (b, fb) = ref(wav), ours(wav)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    for xs, ys in zip(fa, fb):
        for x, y in zip(xs, ys):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


# -- MultiDiscriminator ---------------------------------------------------------------------------
def test_multi_discriminator_names_and_concatenation():
    multi = MultiDiscriminator([SMALL["mpd"], SMALL["mrd"], {**SMALL["mpd"], "periods": [2, 3]},
                                {**SMALL["multiband"], "name": "mb"}])
    assert multi.names == ["mpd", "mrd", "mpd_1", "mb"]
    wav = _wav(batch=1)
    named = multi(wav, named=True)
    assert [len(v[0]) for v in named.values()] == [5, 3, 2, 3]
    logits, fmaps = multi(wav)
    assert len(logits) == len(fmaps) == 13
    assert all(k.startswith("discriminators.") for k in multi.state_dict())


def test_multi_discriminator_config_errors():
    with pytest.raises(ConfigError, match="bogus"):
        MultiDiscriminator([{"type": "mpd", "bogus": 1}])
    with pytest.raises(ConfigError, match="unknown discriminator type"):
        MultiDiscriminator([{"type": "nope"}])
    with pytest.raises(ConfigError, match="duplicate"):
        MultiDiscriminator([{"type": "mrd", "name": "a"}, {"type": "mrd", "name": "a"}])
    with pytest.raises(ConfigError):
        MultiDiscriminator([])


def test_conditioning_embedding():
    torch.manual_seed(0)
    disc = build_discriminator({**SMALL["mpd"], "num_embeddings": 4})
    wav = _wav(batch=2)
    plain = disc(wav)[0][0]
    torch.testing.assert_close(disc(wav, cond_id=torch.tensor(1))[0][0], plain)  # zero-initialised table
    with torch.no_grad():
        disc.discriminators[0].emb.weight.normal_()
    assert not torch.allclose(disc(wav, cond_id=torch.tensor([1, 2]))[0][0], plain)
    assert "discriminators.0.emb.weight" in disc.state_dict()


# -- WavTokenizer checkpoint keys -----------------------------------------------------------------------
def _official_wavtokenizer_keys():
    """The discriminator keys of a WavTokenizer checkpoint, from its constructors (decoder/discriminators.py,
    decoder/discriminator_dac.py): MPD / MRD with a 4-entry embedding, DAC = 5 MPD + 3 multi-band MRD."""
    keys = set()
    wn = ("weight_g", "weight_v", "bias")
    for i in range(5):
        keys |= {f"multiperioddisc.discriminators.{i}.convs.{j}.{w}" for j in range(5) for w in wn}
        keys |= {f"multiperioddisc.discriminators.{i}.conv_post.{w}" for w in wn}
        keys.add(f"multiperioddisc.discriminators.{i}.emb.weight")
        keys |= {f"dac.discriminators.{i}.convs.{j}.0.{w}" for j in range(5) for w in wn}
        keys |= {f"dac.discriminators.{i}.conv_post.{w}" for w in wn}
    for i in range(3):
        keys |= {f"multiresddisc.discriminators.{i}.convs.{j}.{w}" for j in range(5) for w in wn}
        keys |= {f"multiresddisc.discriminators.{i}.conv_post.{w}" for w in wn}
        keys.add(f"multiresddisc.discriminators.{i}.emb.weight")
        keys |= {f"dac.discriminators.{5 + i}.band_convs.{b}.{j}.0.{w}" for b in range(5) for j in range(5) for w in wn}
        keys |= {f"dac.discriminators.{5 + i}.conv_post.{w}" for w in wn}
    return keys


def _to_official(state):
    """Our MultiDiscriminator state -> WavTokenizer names (the inverse of the loader's rules)."""
    out = {}
    for k, v in state.items():
        k = k.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v")
        k = re.sub(r"^discriminators\.mpd\.", "multiperioddisc.", k)
        k = re.sub(r"^discriminators\.mrd\.", "multiresddisc.", k)
        k = re.sub(r"^discriminators\.dac\.", "dac.", k)
        k = re.sub(r"^dac\.discriminators\.([0-4])\.convs\.(\d+)\.", r"dac.discriminators.\1.convs.\2.0.", k)
        out[k] = v
    return out


def test_wavtokenizer_discriminator_keys_round_trip():
    torch.manual_seed(0)
    cfg = [{**SMALL["mpd"], "name": "mpd", "num_embeddings": 4}, {**SMALL["mrd"], "name": "mrd", "num_embeddings": 4},
           {**SMALL["dac"], "name": "dac", "window": "rect"}]
    src = MultiDiscriminator(cfg)
    official = _to_official(src.state_dict())
    assert set(official) == _official_wavtokenizer_keys()
    assert official["multiperioddisc.discriminators.0.convs.0.weight_g"].shape == (4, 1, 1, 1)
    official["backbone.embed.weight"] = torch.zeros(1)          # generator keys are dropped
    official["melspec_loss.mel_spec.mel_scale.fb"] = torch.zeros(1)
    dst = load_official_discriminators(MultiDiscriminator(cfg), official)
    wav = _wav(batch=1)
    for a, b in zip(src(wav)[0], dst(wav)[0]):
        torch.testing.assert_close(a, b)
    # without conditioning tables the embeddings are dropped
    plain = [{k: v for k, v in c.items() if k != "num_embeddings"} for c in cfg]
    load_official_discriminators(MultiDiscriminator(plain), official)


def test_conv_leaky_relu_and_its_fused_bias_activation():
    """Conv2dLeakyReLU = nn.Conv2d then F.leaky_relu (same parameters); the compiled bias + LeakyReLU of its fused
    CUDA path gives the eager values and gradients (input and bias) for NHWC bf16 and NCHW fp32 inputs (compiled
    here on the CPU; the switch itself acts on CUDA tensors only)."""
    from audiocodec.discriminators.common import Conv2dLeakyReLU, bias_leaky_relu, compiled_bias_leaky_relu
    torch.manual_seed(0)
    conv = Conv2dLeakyReLU(3, 8, (5, 1), (3, 1), padding=(2, 0), negative_slope=0.2)
    plain = torch.nn.Conv2d(3, 8, (5, 1), (3, 1), padding=(2, 0))
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 40, 3)
    torch.testing.assert_close(conv(x), torch.nn.functional.leaky_relu(plain(x), 0.2))
    fused = compiled_bias_leaky_relu()
    for dtype, layout in ((torch.bfloat16, torch.channels_last), (torch.float32, torch.contiguous_format)):
        y = torch.randn(4, 8, 30, 5).to(dtype).contiguous(memory_format=layout).requires_grad_()
        bias = torch.randn(8, requires_grad=True)
        grad = torch.randn(4, 8, 30, 5).to(dtype)
        outs = []
        for fn in (bias_leaky_relu, fused):
            out = fn(y, bias, 0.2)
            gy, gb = torch.autograd.grad(out, (y, bias), grad)
            outs.append((out, gy, gb))
        (out, gy, gb), (f_out, f_gy, f_gb) = outs
        assert f_out.dtype == dtype and f_gy.dtype == dtype and f_gb.dtype == torch.float32
        if dtype == torch.float32:
            torch.testing.assert_close(f_out, out)
            torch.testing.assert_close(f_gy, gy)
            torch.testing.assert_close(f_gb, gb)
            continue
        # bf16: the fused kernel adds in fp32, eager rounds y + bias to bf16 first: the activation's side may
        # differ where y + bias is within rounding of 0
        clear = (y.detach().float() + bias.detach()[:, None, None]).abs() > 0.05
        torch.testing.assert_close(f_out.float(), out.float(), rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(f_gy.float()[clear], gy.float()[clear], rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(f_gb, gb, rtol=5e-2, atol=0.5)
