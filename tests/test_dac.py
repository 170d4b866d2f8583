"""DAC family: shapes and exact lengths, official weights files, factorized VQ training, fp32 codes.

``data/dac_tiny.pth`` is a tiny random-weight model written by the official package
(``dac.DAC(...).save(path, package=False)``, dac 1.0.0, codebooks seeded with encoder frames) and
``data/dac_tiny_ref.pt`` its outputs on synthetic audio; ``data/make_dac_fixture.py`` regenerates
both. The ``dac`` package is not needed here.
"""
from pathlib import Path

import pytest
import torch

import audiocodec
from audiocodec.codecs.interop.dac import dac_config, is_dac_checkpoint, to_dac_state
from audiocodec.codecs.registry import build_codec, build_from_config, get_config
from audiocodec.errors import CheckpointError
from audiocodec.quantize.factorized import factorized_rvq
from helpers import synth_audio

DATA = Path(__file__).parent / "data"
TINY_KWARGS = dict(encoder_dim=2, encoder_rates=[2, 3], latent_dim=8, decoder_dim=8, decoder_rates=[3, 2],
                   n_codebooks=3, codebook_size=16, codebook_dim=[4, 4, 2], quantizer_dropout=False,
                   sample_rate=24000)


def tiny_codec(**quantizer):
    return build_codec("dac-24k", num_codebooks=3,
                       encoder={"dim": 2, "rates": [2, 3], "latent_dim": 8},
                       quantizer=dict({"dim": 8, "num_quantizers": 3, "codebook_size": 16, "codebook_dim": 4},
                                      **quantizer),
                       decoder={"input_dim": 8, "dim": 8, "rates": [3, 2]})


def save_dac_file(path, state, kwargs):
    torch.save({"state_dict": state, "metadata": {"kwargs": kwargs}}, path)
    return path


# -- config and shapes ------------------------------------------------------------------------------

def test_dac24k_config_and_lengths():
    codec = build_codec("dac-24k").eval()
    assert codec.hop_length == 320 and codec.sample_rate == 24000 and codec.max_codebooks == 32
    assert codec.cardinality == 1024 and codec.num_codebooks == 32
    assert codec.num_parameters() == 74708706  # = dac.DAC(**24 kHz args), counted with the package
    assert codec.bitrate == pytest.approx(24000.0)
    wav = synth_audio(0.06, batch=2)[..., :1201]
    codes = codec.encode(wav)
    assert codes.tokens.shape == (2, 32, 4)  # ceil(1201 / 320)
    assert codec.decode(codes).shape == (2, 1, 1201)
    assert codec.decode(codes.tokens).shape == (2, 1, 4 * 320)


@pytest.mark.parametrize("length", [1, 5, 6, 7, 60, 233])
def test_tiny_lengths(length):
    codec = tiny_codec().eval()
    assert codec.hop_length == 6
    latents = codec.encoder(torch.randn(2, 1, length))
    frames = -(-length // 6)
    assert latents.shape == (2, 8, frames)
    assert codec.decoder(latents).shape == (2, 1, frames * 6)
    assert codec.decoder.native_length(frames) == frames * 6 - 2  # two odd strides: DAC is 2 samples short
    out = codec(torch.randn(2, 1, length))
    assert out.audio.shape == (2, 1, length) and out.codes.shape == (2, 3, frames)


def test_decoder_pads_by_replicating_last_native_sample():
    codec = tiny_codec().eval()
    with torch.no_grad():
        y = codec.decoder(torch.randn(1, 8, 5))
    native = codec.decoder.native_length(5)
    assert torch.equal(y[..., native:], y[..., native - 1: native].expand(-1, -1, 30 - native))


# -- official weights files --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_file():
    obj = torch.load(DATA / "dac_tiny.pth", weights_only=True)
    ref = torch.load(DATA / "dac_tiny_ref.pt", weights_only=True)
    return obj, ref


@pytest.mark.parametrize("inference", [True, False])
def test_tiny_official_parity(tiny_file, inference):
    obj, ref = tiny_file
    assert obj["metadata"]["kwargs"] == TINY_KWARGS
    codec = audiocodec.load_codec(DATA / "dac_tiny.pth", inference=inference)
    if not inference:
        codec.eval()
    assert codec.name == "dac-24k" and codec.max_codebooks == 3
    wav = ref["wav"]
    codes = codec.encode(wav)
    assert all(len(ref["codes"][:, k].unique()) > 8 for k in range(3))  # the check means something
    # identical here; a near-tie (cosine gaps go down to 1e-5) may flip on another CPU's conv kernels
    assert (codes.tokens != ref["codes"]).float().mean() < 0.01
    for n in (1, 3):
        audio = codec.decode(ref["codes"][:, :n])
        native = ref[f"audio_{n}"]
        assert audio.shape[-1] == codes.tokens.shape[-1] * 6 == native.shape[-1] + 2
        assert (audio[..., : native.shape[-1]] - native).abs().max() < 1e-5
    audio = codec.decode(codes)
    assert audio.shape == wav.shape
    with torch.no_grad():
        fwd = codec(wav).audio  # DAC's forward: quantized latents straight from the encoder
    native = ref["forward_audio"]  # DAC cuts to the input length, but has only 6 T - 2 = 232 of 233 samples
    assert fwd.shape[-1] == wav.shape[-1] == native.shape[-1] + 1
    assert (fwd[..., : native.shape[-1]] - native).abs().max() < 1e-5


def test_official_names_roundtrip(tiny_file, tmp_path):
    """Our state under official names (inverse mapping) has exactly the official file's keys and shapes,
    and loads back to the same outputs."""
    obj, _ = tiny_file
    codec = tiny_codec(codebook_dim=[4, 4, 2]).eval()
    state = to_dac_state(codec)
    assert {k: tuple(v.shape) for k, v in state.items()} == \
        {k: tuple(v.shape) for k, v in obj["state_dict"].items()}
    path = save_dac_file(tmp_path / "w.pth", state, TINY_KWARGS)
    loaded = audiocodec.load_codec(path)
    wav = synth_audio(0.005, batch=1, seed=3)
    assert torch.equal(loaded.encode(wav).tokens, codec.encode(wav).tokens)


def test_strict_loading_names_the_key(tiny_file, tmp_path):
    obj, _ = tiny_file
    state = dict(obj["state_dict"])
    del state["quantizer.quantizers.1.codebook.weight"]
    with pytest.raises(CheckpointError, match=r"missing key.*quantizer\.layers\.1\.codebook\.weight"):
        audiocodec.load_codec(save_dac_file(tmp_path / "a.pth", state, TINY_KWARGS))
    state = dict(obj["state_dict"])
    state["decoder.model.1.block.0.alpha"] = torch.ones(1, 5, 1)
    with pytest.raises(CheckpointError, match=r"decoder\.model\.1\.block\.0\.alpha"):
        audiocodec.load_codec(save_dac_file(tmp_path / "b.pth", state, TINY_KWARGS))
    state = dict(obj["state_dict"], **{"encoder.block.9.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected key.*encoder\.block\.9\.weight"):
        audiocodec.load_codec(save_dac_file(tmp_path / "c.pth", state, TINY_KWARGS))
    # kwargs that disagree with the weights
    with pytest.raises(CheckpointError, match=r"unexpected key.*quantizer\.layers\.2\."):
        audiocodec.load_codec(save_dac_file(tmp_path / "d.pth", obj["state_dict"], dict(TINY_KWARGS, n_codebooks=2,
                                                                                         codebook_dim=4)))
    with pytest.raises(CheckpointError, match="d_out"):
        audiocodec.load_codec(save_dac_file(tmp_path / "e.pth", obj["state_dict"], dict(TINY_KWARGS, d_out=2)))


def test_kwargs_to_config():
    kw24 = dict(encoder_dim=64, encoder_rates=[2, 4, 5, 8], latent_dim=1024, decoder_dim=1536,
                decoder_rates=[8, 5, 4, 2], n_codebooks=32, codebook_size=1024, codebook_dim=8,
                quantizer_dropout=0.5, sample_rate=24000)
    assert dac_config(kw24) == get_config("dac-24k")
    cfg = dac_config(dict(sample_rate=44100))  # DAC's defaults: the 44.1 kHz model, 9 codebooks, hop 512
    assert cfg["name"] == "dac-44.1k" and cfg["num_codebooks"] == 9 and cfg["quantizer"]["quantizer_dropout"] == 0.0
    codec = build_from_config(cfg)
    assert codec.hop_length == 512 and codec.encoder.latent_dim == 1024
    with pytest.raises(CheckpointError, match="different hops"):
        dac_config(dict(encoder_rates=[2, 4], decoder_rates=[4, 4]))
    assert not is_dac_checkpoint({"state_dict": {"encoder.block.0.bias": torch.zeros(1)}})


# -- factorized VQ -----------------------------------------------------------------------------------

def test_factorized_vq_trains():
    torch.manual_seed(0)
    rvq = factorized_rvq(dim=16, num_quantizers=3, codebook_size=32, codebook_dim=4).train()
    x = torch.randn(8, 16, 20)
    opt = torch.optim.Adam(rvq.parameters(), lr=1e-2)
    history = []
    for _ in range(30):
        out = rvq(x)
        assert set(out.losses) == {"commitment", "codebook"} and out.codes.shape == (8, 3, 20)
        loss = torch.nn.functional.mse_loss(out.quantized, x) + out.losses["codebook"] + 0.25 * out.losses["commitment"]
        opt.zero_grad()
        loss.backward()
        assert rvq.layers[0].codebook.weight.grad.abs().sum() > 0
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.7 * history[0]
    rvq.eval()
    # eval forward, encode and decode agree
    out = rvq(x)
    assert torch.equal(out.codes, rvq.encode(x))
    assert torch.allclose(out.quantized, rvq.decode(out.codes), atol=1e-5)


def test_codes_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    codec = tiny_codec().eval()
    latents = codec.encoder(synth_audio(0.02, batch=2)).detach() * 10
    ref = codec.quantizer.encode(latents)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(codec.quantizer.encode(latents), ref)
        assert torch.equal(codec.quantizer(latents).codes, ref)
        assert torch.equal(codec.quantizer.layers[0].encode(latents.bfloat16()),
                           codec.quantizer.layers[0].encode(latents.bfloat16().float()))


def test_training_forward_with_dropout():
    torch.manual_seed(0)
    codec = tiny_codec(quantizer_dropout=1.0).train()
    out = codec(synth_audio(0.01, batch=2))
    assert 1 <= out.codes.shape[1] <= 3 and out.audio.shape == (2, 1, 240)
    (out.audio.pow(2).mean() + out.losses["commitment"] + out.losses["codebook"]).backward()
    assert codec.encoder.block[0].parametrizations.weight.original1.grad is not None
