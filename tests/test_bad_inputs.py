"""Every bad input gets a specific error whose message says what was wrong."""
from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

import audiocodec
from audiocodec import AudioError, CheckpointError, Codes, CodesError, ConfigError
from audiocodec.audio import check_sample_rate, convert_channels, load_audio, save_audio


def tiny_codec(**overrides):
    small = dict(n_filters=4, dimension=32, lstm=0)
    kw = dict(num_codebooks=4, encoder=small, decoder=small,
              quantizer=dict(num_quantizers=4, codebook_size=64, dim=32, kmeans_init=False))
    kw.update(overrides)
    return audiocodec.build_codec("encodec-24k", **kw).prepare_for_inference()


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return tiny_codec()


@pytest.fixture(scope="module")
def codes(codec):
    return codec.encode(torch.randn(2, 1, 3000) * 0.1, sample_rate=16000)


# -- audio files ----------------------------------------------------------------------------------

def test_load_audio_missing(tmp_path):
    with pytest.raises(AudioError, match="audio file not found: .*nope.wav"):
        load_audio(tmp_path / "nope.wav")


def test_load_audio_directory(tmp_path):
    with pytest.raises(AudioError, match="expected an audio file, got a directory"):
        load_audio(tmp_path)


def test_load_audio_zero_bytes(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"audio file is empty \(0 bytes\)"):
        load_audio(tmp_path / "x.wav")


def test_load_audio_text_file(tmp_path):
    (tmp_path / "notes.wav").write_text("these are not samples\n" * 20)
    with pytest.raises(AudioError, match="cannot read audio file .*notes.wav"):
        load_audio(tmp_path / "notes.wav")


def test_load_audio_no_samples(tmp_path):
    sf.write(tmp_path / "x.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="audio file holds no samples"):
        load_audio(tmp_path / "x.wav")


@pytest.mark.parametrize("value, kind", [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")])
def test_load_audio_non_finite(tmp_path, value, kind):
    x = np.zeros(100, dtype=np.float32)
    x[10:13] = value
    sf.write(tmp_path / "x.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=f"contains 3 {kind} sample"):
        load_audio(tmp_path / "x.wav")


@pytest.mark.parametrize("sr, msg", [(0, "impossible sample rate 0 Hz"), (-1, "impossible sample rate -1 Hz"),
                                     (1e9, "impossible sample rate 1000000000 Hz"),
                                     (44100.5, "whole number of Hz, got 44100.5"),
                                     (float("nan"), "whole number of Hz"),
                                     ("abc", "must be a number of Hz, got 'abc'"), (True, "must be a number")])
def test_check_sample_rate(sr, msg):
    with pytest.raises(AudioError, match=msg):
        check_sample_rate(sr)


def test_check_sample_rate_accepts_whole_floats():
    assert check_sample_rate(44100.0) == 44100 and check_sample_rate(np.int64(16000)) == 16000


def test_save_audio_nan(tmp_path):
    with pytest.raises(AudioError, match="audio to save contains 1 NaN"):
        save_audio(tmp_path / "x.wav", torch.tensor([0.0, float("nan"), 0.1]), 16000)
    assert not list(tmp_path.iterdir())


def test_save_audio_bad_extension_and_shape(tmp_path):
    with pytest.raises(AudioError, match=r"cannot write audio with extension '\.xyz'"):
        save_audio(tmp_path / "x.xyz", torch.zeros(10), 16000)
    with pytest.raises(AudioError, match=r"expects \[L\] or \[C, L\]"):
        save_audio(tmp_path / "x.wav", torch.zeros(1, 1, 10), 16000)


def test_convert_channels_impossible():
    with pytest.raises(AudioError, match="cannot convert 3 channels to 2"):
        convert_channels(torch.zeros(3, 10), 2)
    with pytest.raises(AudioError, match="channel count must be >= 1"):
        convert_channels(torch.zeros(1, 10), 0)


# -- Codec.encode ------------------------------------------------------------------------------------

@pytest.mark.parametrize("wav, kwargs, err, msg", [
    (torch.zeros(0), {}, AudioError, r"audio is empty: shape \(1, 1, 0\)"),
    (torch.zeros(0, 1, 100), {}, AudioError, "audio is empty"),
    (torch.tensor([0.0, float("nan"), 0.0] * 100), {}, AudioError, "contains 100 NaN"),
    (torch.tensor([0.0, float("inf"), 0.0] * 100), {}, AudioError, "contains 100 infinite"),
    (torch.zeros(1, 1, 1, 100), {}, AudioError, r"shaped \[L\], \[C, L\] or \[B, C, L\], got \(1, 1, 1, 100\)"),
    (torch.zeros(100, dtype=torch.int16), {}, AudioError, "floating-point audio samples, got torch.int16"),
    ([0.0] * 100, {}, AudioError, "tensor or numpy array, got list"),
    (torch.zeros(2, 1, 100), {"lengths": [100]}, AudioError, "got 1 lengths for a batch of 2"),
    (torch.zeros(2, 1, 100), {"lengths": [100, 101]}, AudioError, r"lengths must be in 1\.\.100"),
    (torch.zeros(2, 1, 100), {"lengths": [0, 100]}, AudioError, r"lengths must be in 1\.\.100"),
    (torch.zeros(100), {"sample_rate": 10}, AudioError, "impossible sample rate 10 Hz"),
    (torch.zeros(100), {"sample_rate": 16000.5}, AudioError, "whole number of Hz"),
])
def test_encode_bad_input(codec, wav, kwargs, err, msg):
    with pytest.raises(err, match=msg):
        codec.encode(wav, **kwargs)


def test_encode_downmixes_any_channel_count(codec):
    assert codec.encode(torch.zeros(3, 100)).tokens.shape[0] == 1  # not an error: 3 channels mix to mono


# -- Codec.decode ------------------------------------------------------------------------------------

@pytest.mark.parametrize("tokens, msg", [
    (torch.full((1, 4, 5), -1), r"tokens out of range: found values in \[-1, -1\] .*valid 0\.\.63"),
    (torch.full((1, 4, 5), 64), r"tokens out of range: found values in \[64, 64\] but the codebook has 64"),
    (torch.zeros(1, 4, 5), "tokens must be integers, got torch.float32"),
    (torch.zeros(1, 4, 5, dtype=torch.bool), "tokens must be integers, got torch.bool"),
    (torch.zeros(1, 5, 5, dtype=torch.long), r"codes have 5 codebooks; this codec has 1\.\.4"),
    (torch.zeros(1, 0, 5, dtype=torch.long), r"codes have 0 codebooks"),
    (torch.zeros(1, 4, 0, dtype=torch.long), r"codes are empty \(0 frames\)"),
    (torch.zeros(5, dtype=torch.long), r"tokens must be a tensor \[B, K, T\]"),
    (np.zeros((1, 4, 5), dtype=np.int64), "expected Codes or a LongTensor"),
])
def test_decode_bad_tokens(codec, tokens, msg):
    with pytest.raises(CodesError, match=msg):
        codec.decode(tokens)


def test_decode_codes_of_another_model(codec):
    other = tiny_codec(name="other-codec")
    codes = other.encode(torch.randn(1, 1, 2000) * 0.1)
    with pytest.raises(CodesError, match="made by 'other-codec', not by this codec \\('encodec-24k'\\)"):
        codec.decode(codes)


def test_decode_codes_of_another_training(codec):
    torch.manual_seed(1)
    retrained = tiny_codec()  # same config, other codebooks
    codes = retrained.encode(torch.randn(1, 1, 2000) * 0.1)
    with pytest.raises(CodesError, match="made by another 'encodec-24k' model .*fingerprint"):
        codec.decode(codes)


def test_decode_codes_with_bad_tokens(codec, codes):
    from dataclasses import replace
    with pytest.raises(CodesError, match="tokens out of range"):
        codec.decode(replace(codes, tokens=codes.tokens + 64))


# -- Codes files -------------------------------------------------------------------------------------

def test_codes_load_missing(tmp_path):
    with pytest.raises(CodesError, match="codes file not found: .*nope.npz"):
        Codes.load(tmp_path / "nope.npz")


def test_codes_load_truncated(tmp_path, codes):
    path = codes.save(tmp_path / "c.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CodesError, match="cannot read codes file"):
        Codes.load(path)


def test_codes_load_garbage(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"\x00garbage" * 50)
    with pytest.raises(CodesError, match="cannot read codes file"):
        Codes.load(tmp_path / "c.npz")


def test_codes_load_corrupt_member(tmp_path, codes):
    # a valid zip whose tokens member is not a .npy array
    path = codes.save(tmp_path / "c.npz")
    buf = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(buf, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, b"junk" if item.filename == "tokens.npy" else src.read(item))
    path.write_bytes(buf.getvalue())
    with pytest.raises(CodesError, match="cannot read codes file"):
        Codes.load(path)


def test_codes_load_missing_arrays(tmp_path):
    np.savez(tmp_path / "c.npz", tokens=np.zeros((1, 1, 3), dtype=np.int16))
    with pytest.raises(CodesError, match=r"lacks \['header', 'input_lengths', 'lengths'\]"):
        Codes.load(tmp_path / "c.npz")


_UNPICKLED: list = []


def _trap():
    _UNPICKLED.append(True)
    return "trapped"


class _Trap:
    def __reduce__(self):
        return (_trap, ())


def test_codes_load_refuses_pickles(tmp_path, codes):
    path = codes.save(tmp_path / "c.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["tokens"] = np.array([_Trap()], dtype=object)
    np.savez(path, **arrays)
    assert pickle.loads(pickle.dumps(_Trap())) == "trapped" and _UNPICKLED.pop()
    with pytest.raises(CodesError, match="cannot read codes file .*allow_pickle"):
        Codes.load(path)
    assert not _UNPICKLED


def _resave(path, **changes):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    np.savez(path, **arrays)


def test_codes_load_wrong_shape(tmp_path, codes):
    path = codes.save(tmp_path / "c.npz")
    _resave(path, tokens=np.zeros((4, 5), dtype=np.int16))
    with pytest.raises(CodesError, match=r"tokens must be integers shaped \[B, K, T\], got int16 \(4, 5\)"):
        Codes.load(path)
    _resave(path, tokens=np.zeros((2, 4, 5), dtype=np.float32))
    with pytest.raises(CodesError, match="tokens must be integers shaped"):
        Codes.load(path)
    _resave(path, tokens=np.zeros((3, 4, 5), dtype=np.int16))
    with pytest.raises(CodesError, match="lengths do not match the batch size 3"):
        Codes.load(path)


def test_codes_load_bad_values_and_header(tmp_path, codes):
    path = codes.save(tmp_path / "c.npz")
    _resave(path, tokens=np.full((2, 4, 5), 999, dtype=np.int16), lengths=np.array([5, 5]))
    with pytest.raises(CodesError, match="tokens out of range"):
        Codes.load(path)
    path = codes.save(tmp_path / "c.npz")
    _resave(path, lengths=np.array([1, 10 ** 6]))
    with pytest.raises(CodesError, match=r"lengths \[1, 1000000\] do not fit"):
        Codes.load(path)
    path = codes.save(tmp_path / "c.npz")
    _resave(path, header=np.frombuffer(b"{not json", dtype=np.uint8))
    with pytest.raises(CodesError, match="corrupt header"):
        Codes.load(path)
    path = codes.save(tmp_path / "c.npz")
    _resave(path, header=np.frombuffer(json.dumps({"format": "audiocodec.codes"}).encode(), dtype=np.uint8))
    with pytest.raises(CodesError, match="incomplete header"):
        Codes.load(path)


# -- configs ----------------------------------------------------------------------------------------

def test_build_codec_unknown_name():
    with pytest.raises(ConfigError, match="unknown codec 'nope'; known codecs: .*encodec-24k"):
        audiocodec.build_codec("nope")


def test_build_codec_unknown_top_level_key():
    with pytest.raises(ConfigError, match="unknown config key 'samplerate'"):
        audiocodec.build_codec("encodec-24k", samplerate=16000)


def test_build_codec_unknown_component_key():
    with pytest.raises(ConfigError, match=r"encoder\.n_filterz"):
        audiocodec.build_codec("encodec-24k", encoder={"n_filterz": 8})
    with pytest.raises(ConfigError, match=r"quantizer\.codebook_sise"):
        audiocodec.build_codec("encodec-24k", quantizer={"codebook_sise": 8})


def test_build_codec_unknown_component_type():
    with pytest.raises(ConfigError, match="encoder: unknown encoder type 'transformer'; known: .*seanet"):
        audiocodec.build_codec("encodec-24k", encoder={"type": "transformer"})


def test_build_codec_from_bad_dict():
    with pytest.raises(ConfigError, match="codec config lacks 'decoder'"):
        audiocodec.build_codec({"sample_rate": 24000, "encoder": {"type": "seanet"}, "quantizer": {"type": "rvq"}})


# -- checkpoints ------------------------------------------------------------------------------------

def test_load_codec_missing(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.safetensors"):
        audiocodec.load_codec(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("name, msg", [("notes.txt", "cannot read checkpoint"), ("model.pt", "cannot read checkpoint"),
                                       ("model.safetensors", "cannot read safetensors file")])
def test_load_codec_text_file(tmp_path, name, msg):
    (tmp_path / name).write_text("this is not a checkpoint\n" * 10)
    with pytest.raises(CheckpointError, match=msg):
        audiocodec.load_codec(tmp_path / name)


def test_load_codec_empty_folder(tmp_path):
    with pytest.raises(CheckpointError, match="folder without model.safetensors"):
        audiocodec.load_codec(tmp_path)


def test_load_codec_wrong_shape(tmp_path, codec):
    path = audiocodec.save_codec(tiny_codec(), tmp_path / "m.safetensors")
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    key = "quantizer.layers.0.codebook.embed"
    state[key] = torch.zeros(32, 32)
    save_file(state, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=rf"shape mismatch.*{key}: checkpoint \(32, 32\) vs model \(64, 32\)"):
        audiocodec.load_codec(path)
    # a bare state dict with a config
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=rf"shape mismatch.*{key}"):
        audiocodec.load_codec(tmp_path / "m.pt", config=json.loads(meta["config"]))


def test_load_codec_missing_key(tmp_path):
    path = audiocodec.save_codec(tiny_codec(), tmp_path / "m.safetensors")
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("decoder.")}
    save_file(state, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=r"missing key\(s\): decoder\."):
        audiocodec.load_codec(path)


def test_load_codec_safetensors_without_metadata(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "m.safetensors"))
    with pytest.raises(CheckpointError, match="has no audiocodec config in its metadata: pass config="):
        audiocodec.load_codec(tmp_path / "m.safetensors")


def test_load_codec_unknown_state_dict(tmp_path):
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="cannot tell which model .* holds \\(first keys: foo.weight\\)"):
        audiocodec.load_codec(tmp_path / "m.pt")
    torch.save([1, 2, 3], tmp_path / "l.pt")
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        audiocodec.load_codec(tmp_path / "l.pt")
