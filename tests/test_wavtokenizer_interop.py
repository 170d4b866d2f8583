"""Official WavTokenizer checkpoints load into our codec: files written with the official key names and
shapes (old weight_g / weight_v names, the unused SEANet decoder, Lightning extras, discriminators) give
the same codes and audio as the model they were written from. (Parity with the official code itself,
which CI cannot install, was checked separately with random weights: identical codes, audio within 1e-7.)"""
import contextlib
import sys
import types

import pytest
import torch
import yaml

import audiocodec
from audiocodec.codecs.interop import official
from audiocodec.codecs.interop.keys import rename_keys
from audiocodec.errors import CheckpointError
from audiocodec.nn.conv import PaddedConv1d, PaddedConvTranspose1d
from audiocodec.nn.seanet import SEANetDecoder
from helpers import seed_euclidean_rvq, synth_audio

VARIANTS = {"75": ("wavtokenizer-75", [8, 5, 4, 2], 1280, 320), "40": ("wavtokenizer-40", [6, 5, 5, 4], 2400, 600)}
_WN = ".parametrizations.weight.original"


class ModelCheckpoint:
    """Pickled as ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``; never rebuilt for real."""

    def __init__(self):
        self.monitor, self.best_model_score = "val_loss", torch.tensor(0.31)

    def __setstate__(self, state):  # pragma: no cover - must not run
        raise AssertionError("the loader ran code of a pickled training object")


@contextlib.contextmanager
def lightning_module_for_pickling():
    saved = dict(sys.modules)
    name = "pytorch_lightning.callbacks.model_checkpoint"
    try:
        for part in ("pytorch_lightning", "pytorch_lightning.callbacks"):
            sys.modules.setdefault(part, types.ModuleType(part))
        module = types.ModuleType(name)
        ModelCheckpoint.__module__ = name
        module.ModelCheckpoint = ModelCheckpoint
        sys.modules[name] = module
        yield
    finally:
        for key in list(sys.modules):
            if key not in saved:
                del sys.modules[key]


def official_name(key: str, modules: dict, prefix: str) -> str:
    """Our SEANet key -> the official (EnCodec-style) one, with old weight-norm names."""
    if _WN in key:
        mod, idx = key.split(_WN)
        leaf = "weight_g" if idx == "0" else "weight_v"
    else:
        mod, leaf = key.rsplit(".", 1)
    if isinstance(modules[mod], PaddedConvTranspose1d):
        return f"{prefix}{mod}.convtr.convtr.{leaf}"
    if isinstance(modules[mod], PaddedConv1d):
        return f"{prefix}{mod}.conv.conv.{leaf}"
    return f"{prefix}{mod}.{leaf}"


def to_official_state(codec) -> dict:
    """The inverse of ``official.WAVTOKENIZER_RULES``: our state dict under the official names and shapes,
    plus the unused SEANet decoder every official file carries (always ratios 8, 5, 4, 2)."""
    out = {}
    enc_modules = dict(codec.encoder.named_modules())
    for k, v in codec.encoder.state_dict().items():
        out[official_name(k, enc_modules, "feature_extractor.encodec.encoder.")] = v.clone()
    for k, v in codec.quantizer.state_dict().items():
        k = k.replace("layers.", "vq.layers.").replace(".codebook.", "._codebook.")
        out[f"feature_extractor.encodec.quantizer.{k}"] = v.clone()
    for k, v in codec.decoder.state_dict().items():
        out[k] = v.clone()  # backbone.* and head.*
    unused = SEANetDecoder(channels=1, dimension=512, n_filters=32, ratios=[8, 5, 4, 2], causal=False, lstm=2,
                           true_skip=False, compress=2, norm="weight_norm")
    dec_modules = dict(unused.named_modules())
    for k, v in unused.state_dict().items():
        out[official_name(k, dec_modules, "feature_extractor.encodec.decoder.")] = v
    return out


def official_yaml(ratios, n_fft, hop) -> dict:
    """The official training YAML (only the parts that describe the model, as in configs/*.yaml)."""
    return {"seed_everything": 3407, "model": {"class_path": "decoder.experiment.WavTokenizer", "init_args": {
        "sample_rate": 24000, "initial_learning_rate": 2e-4, "mel_loss_coeff": 45, "resume": False,
        "feature_extractor": {"class_path": "decoder.feature_extractors.EncodecFeatures", "init_args": {
            "encodec_model": "encodec_24khz", "bandwidths": [6.6, 6.6, 6.6, 6.6], "train_codebooks": True,
            "num_quantizers": 1, "dowmsamples": list(ratios), "vq_bins": 4096, "vq_kmeans": 200}},
        "backbone": {"class_path": "decoder.models.VocosBackbone", "init_args": {
            "input_channels": 512, "dim": 768, "intermediate_dim": 2304, "num_layers": 12,
            "adanorm_num_embeddings": 4}},
        "head": {"class_path": "decoder.heads.ISTFTHead", "init_args": {
            "dim": 768, "n_fft": n_fft, "hop_length": hop, "padding": "same"}}}},
        "trainer": {"callbacks": [{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint"}]}}


@torch.no_grad()
def perturb(codec, seed):
    """Move norms, AdaLN tables, layer scales, weight-norm gains and biases off their init values, so that
    a swapped or ignored tensor changes the output."""
    g = torch.Generator().manual_seed(seed)
    for name, p in codec.named_parameters():
        if name.endswith(_WN + "0"):
            p.mul_(1 + 0.2 * torch.rand(p.shape, generator=g))
        elif name.endswith(("gamma", "scale.weight")) or ("norm" in name and name.endswith("weight")):
            p.add_(0.1 * torch.randn(p.shape, generator=g))
        elif name.endswith(("bias", "shift.weight")):
            p.add_(0.02 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def checkpoint(request, tmp_path_factory):
    """(variant, source codec, official-style state dict, path of a Lightning .ckpt, path of its YAML,
    (audio, its codes and decoded audio by the source codec))."""
    variant = request.param
    name, ratios, n_fft, hop = VARIANTS[variant]
    torch.manual_seed(int(variant))
    source = audiocodec.build_codec(name).eval()
    perturb(source, int(variant))
    seed_euclidean_rvq(source.encoder, source.quantizer.layers, synth_audio(0.6, batch=2, seed=7))
    wav = synth_audio(0.45, batch=2, seed=3)
    ref_codes = source.encode(wav).tokens
    reference = (wav, ref_codes, source.decode(ref_codes))
    state = to_official_state(source)
    folder = tmp_path_factory.mktemp(f"wavtokenizer{variant}")
    path = folder / f"wavtokenizer_{variant}.ckpt"
    lightning_state = dict(state)
    lightning_state.update({  # the training module also checkpoints its discriminators and loss buffers
        "multiperioddisc.discriminators.0.convs.0.weight_v": torch.randn(32, 1, 5, 1),
        "dac.discriminators.0.band_convs.0.0.bias": torch.randn(32),
        "melspec_loss.mel_spec.mel_scale.fb": torch.randn(513, 100),
    })
    with lightning_module_for_pickling():
        torch.save({"epoch": 40, "global_step": 400000, "pytorch-lightning_version": "1.8.6",
                    "state_dict": lightning_state,
                    "callbacks": {ModelCheckpoint: {"best_model_path": "x.ckpt"},
                                  "ModelCheckpoint{'monitor': 'val_loss'}": ModelCheckpoint()},
                    "optimizer_states": [{"state": {}, "param_groups": [{"lr": 2e-4, "params": []}]}],
                    "lr_schedulers": [{"last_epoch": 3, "lr_lambdas": [None]}],
                    "hparams_name": "kwargs", "hyper_parameters": {"sample_rate": 24000}}, path)
    yaml_path = folder / "config.yaml"
    yaml_path.write_text(yaml.safe_dump(official_yaml(ratios, n_fft, hop)))
    return variant, source, state, path, yaml_path, reference


def test_official_layout(checkpoint):
    """The generated file has the official keys: 289 of them, weight_g [out, 1, 1], and the official
    rules map them back onto exactly our parameters."""
    _, source, state, _, _, _ = checkpoint
    assert len(state) == 289
    assert state["feature_extractor.encodec.encoder.model.0.conv.conv.weight_g"].shape == (32, 1, 1)
    assert state["feature_extractor.encodec.encoder.model.15.conv.conv.weight_v"].shape == (512, 512, 7)
    assert state["feature_extractor.encodec.quantizer.vq.layers.0._codebook.embed"].shape == (4096, 512)
    assert "feature_extractor.encodec.decoder.model.3.convtr.convtr.weight_g" in state
    assert "backbone.pos_net.2.proj_out.weight" in state and "head.istft.window" in state
    renamed = rename_keys(state, official.WAVTOKENIZER_RULES)
    renamed = {k.replace(".weight_g", _WN + "0").replace(".weight_v", _WN + "1") for k in renamed}
    assert renamed == set(source.state_dict())


@pytest.mark.parametrize("with_yaml", [False, True], ids=["inferred", "yaml"])
def test_codes_and_audio_match(checkpoint, with_yaml):
    variant, _, _, path, yaml_path, (wav, ref_codes, ref_audio) = checkpoint
    ours = audiocodec.load_codec(path, config=yaml_path if with_yaml else None)
    assert ours.name == VARIANTS[variant][0] and ours.hop_length == VARIANTS[variant][3]
    assert len(ref_codes.unique()) > 10  # the comparison means something only if codes vary
    codes = ours.encode(wav)
    assert torch.equal(codes.tokens, ref_codes)
    audio = ours.decode(codes.tokens)
    assert audio.shape == ref_audio.shape == (2, 1, ref_codes.shape[-1] * VARIANTS[variant][3])
    assert (audio - ref_audio).abs().max() < 1e-4


@pytest.mark.parametrize("checkpoint", ["40"], indirect=True)
def test_wrong_shape_and_missing_keys_are_named(checkpoint):
    variant, _, state, _, _, _ = checkpoint
    bad = dict(state)
    bad["backbone.convnext.3.pwconv2.weight"] = bad["backbone.convnext.3.pwconv2.weight"][:, :100]
    with pytest.raises(CheckpointError, match=r"backbone\.convnext\.3\.pwconv2\.weight.*\(768, 100\)"):
        official.load_wavtokenizer_state(bad)
    missing = {k: v for k, v in state.items() if k != "feature_extractor.encodec.encoder.model.13.lstm.weight_hh_l1"}
    with pytest.raises(CheckpointError, match=r"missing key.*encoder\.model\.13\.lstm\.weight_hh_l1"):
        official.load_wavtokenizer_state(missing)


@pytest.mark.parametrize("checkpoint", ["40"], indirect=True)
def test_yaml_of_the_other_variant_is_refused(checkpoint, tmp_path):
    variant, _, _, path, _, _ = checkpoint
    other = tmp_path / "75.yaml"
    other.write_text(yaml.safe_dump(official_yaml([8, 5, 4, 2], 1280, 320)))
    with pytest.raises(CheckpointError, match=r"head\.out\.weight"):
        audiocodec.load_codec(path, config=other)
