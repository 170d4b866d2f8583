"""The command line, run in-process on tiny synthetic files with a tiny random codec."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

import audiocodec
from audiocodec import Codec, Codes
from audiocodec.cli import main, resolve_model

SR = 24000
# name -> (sample rate, samples, channels); different lengths, rates and a stereo file, in subfolders
FILES = {
    "a.wav": (24000, 12000, 1),
    "sub/b.wav": (16000, 5923, 1),
    "sub/deeper/c.flac": (44100, 26901, 2),
    "sub/d.wav": (24000, 1001, 1),
}


def tiny_codec(**overrides):
    small = dict(n_filters=4, dimension=32, lstm=0)
    kw = dict(num_codebooks=4, encoder=small, decoder=small,
              quantizer=dict(num_quantizers=4, codebook_size=64, dim=32, kmeans_init=False))
    kw.update(overrides)
    return audiocodec.build_codec("encodec-24k", **kw)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return audiocodec.save_codec(tiny_codec(), tmp_path_factory.mktemp("model") / "tiny.safetensors")


def write_dataset(root: Path, files=FILES) -> dict[Path, tuple[int, int, int]]:
    rng = np.random.default_rng(0)
    out = {}
    for rel, (sr, n, ch) in files.items():
        t = np.arange(n) / sr
        x = 0.3 * np.sin(2 * np.pi * 220 * t)[:, None] + 0.05 * rng.standard_normal((n, ch))
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x.astype(np.float32), sr)
        out[path] = (sr, n, ch)
    return out


def out_name(root: Path, src: Path, outdir: Path, suffix: str) -> Path:
    return outdir / src.relative_to(root).with_suffix(suffix)


def test_encode_decode_folder(tmp_path, model_path, capsys):
    data = tmp_path / "data"
    files = write_dataset(data)
    codes_dir, wav_dir = tmp_path / "codes", tmp_path / "wav"
    assert main(["encode", str(data), "-o", str(codes_dir), "--model", str(model_path), "--batch-size", "3",
                 "--device", "cpu", "-q"]) == 0
    codec = audiocodec.load_codec(model_path)
    for src, (sr, n, ch) in files.items():
        codes = Codes.load(out_name(data, src, codes_dir, ".npz"))
        frames = math.ceil(math.ceil(n * SR / sr) / codec.hop_length)
        assert codes.tokens.shape == (1, 4, frames)
        assert codes.lengths.tolist() == [frames]
        assert (codes.model_id, codes.sample_rate, codes.frame_rate) == ("encodec-24k", SR, codec.frame_rate)
        assert (codes.input_sample_rate, codes.input_lengths.tolist(), codes.input_channels) == (sr, [n], ch)
    assert "encoded 4 file(s)" in capsys.readouterr().err

    assert main(["decode", str(codes_dir), "-o", str(wav_dir), "--model", str(model_path), "-q"]) == 0
    for src, (sr, n, _) in files.items():
        info = sf.info(str(out_name(data, src, wav_dir, ".wav")))
        assert info.samplerate == SR and info.channels == 1
        assert info.frames == round(n * SR / sr)


def test_encode_matches_library_and_num_codebooks(tmp_path, model_path):
    data = tmp_path / "data"
    files = write_dataset(data, {"x.wav": (16000, 7777, 1)})
    assert main(["encode", str(next(iter(files))), "-o", str(tmp_path / "c"), "--model", str(model_path),
                 "-k", "2", "-q"]) == 0
    codes = Codes.load(tmp_path / "c" / "x.npz")
    codec = audiocodec.load_codec(model_path).set_num_codebooks(2)
    wav, sr = audiocodec.audio.load_audio(data / "x.wav")
    ref = codec.encode(wav, sample_rate=sr)
    assert torch.equal(codes.tokens, ref.tokens)
    assert torch.equal(codec.decode(codes), codec.decode(ref))


def test_compile_flag_compiles_the_codec_and_keeps_the_codes(tmp_path, model_path, monkeypatch):
    """``--compile`` runs Codec.compile() (on the CPU: the encoder's activations) before coding: the same codes and
    audio as without."""
    data = tmp_path / "data"
    write_dataset(data, {"x.wav": (24000, 9000, 1)})
    compiled = []
    original = Codec.compile
    monkeypatch.setattr(Codec, "compile", lambda self, *a, **k: compiled.append(self) or original(self, *a, **k))
    for flag in ([], ["--compile"]):
        out = tmp_path / f"c{len(flag)}"
        assert main(["encode", str(data), "-o", str(out), "--model", str(model_path), "--device", "cpu", "-q"]
                    + flag) == 0
        assert main(["decode", str(out), "-o", str(tmp_path / f"w{len(flag)}"), "--model", str(model_path), "-q"]
                    + flag) == 0
    assert len(compiled) == 2 and compiled[0].encoder.compiled_activations
    assert torch.equal(Codes.load(tmp_path / "c0" / "x.npz").tokens, Codes.load(tmp_path / "c1" / "x.npz").tokens)
    a, _ = sf.read(tmp_path / "w0" / "x.wav")
    b, _ = sf.read(tmp_path / "w1" / "x.wav")
    assert np.abs(a - b).max() <= 2 / 32768   # PCM_16: at most a rounding step apart


def test_decode_batched_codes_file(tmp_path, model_path):
    codec = audiocodec.load_codec(model_path)
    wav = torch.randn(2, 1, 4000) * 0.1
    codec.encode(wav, sample_rate=16000, lengths=[4000, 2500]).save(tmp_path / "in" / "batch.npz")
    assert main(["decode", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(model_path), "-q"]) == 0
    assert sf.info(str(tmp_path / "out" / "batch_0.wav")).frames == 6000
    assert sf.info(str(tmp_path / "out" / "batch_1.wav")).frames == 3750


def test_reconstruct(tmp_path, model_path, capsys):
    data = tmp_path / "data"
    files = write_dataset(data)
    out = tmp_path / "rec"
    assert main(["reconstruct", str(data), "-o", str(out), "--model", str(model_path), "-b", "2", "-q"]) == 0
    for src, (sr, n, _) in files.items():
        y, y_sr = sf.read(str(out_name(data, src, out, ".wav")))
        assert y_sr == SR and y.shape == (round(n * SR / sr),)
    assert "reconstructed 4 file(s)" in capsys.readouterr().err


def test_info(model_path, capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    for name in audiocodec.list_codecs():
        assert name in text
    assert main(["info", "--model", str(model_path)]) == 0
    text = capsys.readouterr().out
    for needle in ("sample rate", "24000 Hz", "frame rate", "75 frames/s", "codebooks", "4 used (1..4",
                   "cardinality", "64", "bitrate", "1.8 kbps", "parameters", "encoder", "quantizer", "decoder"):
        assert needle in text, needle


def test_named_config_warns_random_weights(capsys):
    assert main(["info", "--model", "encodec-24k"]) == 0
    assert "RANDOM weights" in capsys.readouterr().err


def test_convert_round_trip(tmp_path, model_path):
    # our safetensors -> safetensors, and a bare state dict + config YAML -> safetensors: identical codes
    codec = audiocodec.load_codec(model_path, inference=False)
    torch.save(codec.state_dict(), tmp_path / "bare.pt")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(codec.config))
    assert main(["convert", str(model_path), str(tmp_path / "conv1.safetensors")]) == 0
    assert main(["convert", str(tmp_path / "bare.pt"), str(tmp_path / "conv2"), "--config",
                 str(tmp_path / "cfg.yaml")]) == 0
    wav = torch.randn(1, 1, 9000) * 0.2
    ref = audiocodec.load_codec(model_path).encode(wav).tokens
    for path in (tmp_path / "conv1.safetensors", tmp_path / "conv2" / "model.safetensors"):
        assert torch.equal(audiocodec.load_codec(path).encode(wav).tokens, ref)
    # an existing destination is refused without --overwrite
    assert main(["convert", str(model_path), str(tmp_path / "conv1.safetensors")]) == 2
    assert main(["convert", str(model_path), str(tmp_path / "conv1.safetensors"), "--overwrite"]) == 0


def test_bad_files_are_skipped_and_reported(tmp_path, model_path, capsys):
    data = tmp_path / "data"
    files = write_dataset(data)
    (data / "sub" / "corrupt.wav").write_bytes(b"RIFF\x00\x01garbage" * 10)
    (data / "empty.wav").write_bytes(b"")
    sf.write(data / "sub" / "nan.wav", np.full(100, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    out = tmp_path / "codes"
    rc = main(["encode", str(data), "-o", str(out), "--model", str(model_path), "-b", "8", "-q"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "3 failed" in err and "encoded 4 file(s)" in err
    for bad, why in (("corrupt.wav", "cannot read audio file"), ("empty.wav", "empty (0 bytes)"),
                     ("nan.wav", "NaN")):
        assert any(bad in line and why in line for line in err.splitlines()), (bad, err)
    assert "Traceback" not in err
    for src in files:
        assert out_name(data, src, out, ".npz").is_file()
    assert not (out / "sub" / "corrupt.npz").exists()
    # a bad codes file (and codes from another model) while decoding: reported, others decoded
    (out / "bad.npz").write_bytes(b"not a zip")
    other = tiny_codec(name="other-codec")
    other.encode(torch.randn(1, 1, 3000) * 0.1).save(out / "other.npz")
    rc = main(["decode", str(out), "-o", str(tmp_path / "wav"), "--model", str(model_path), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "decoded 4 file(s)" in err and "2 failed" in err
    assert "cannot read codes file" in err and "made by 'other-codec'" in err


def test_rerun_skips_existing_outputs(tmp_path, model_path, capsys):
    data = tmp_path / "data"
    files = write_dataset(data)
    out = tmp_path / "codes"
    args = ["encode", str(data), "-o", str(out), "--model", str(model_path), "-q"]
    assert main(args) == 0
    first = next(iter(files))
    target = out_name(data, first, out, ".npz")
    target.unlink()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "encoded 1 file(s)" in err and "skipped 3 existing" in err
    assert target.is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert main(args + ["--overwrite"]) == 0
    assert "encoded 4 file(s)" in capsys.readouterr().err


def test_top_level_errors(tmp_path, model_path, capsys):
    write_dataset(tmp_path / "data", {"a.wav": (24000, 2000, 1)})
    base = ["encode", str(tmp_path / "data"), "-o", str(tmp_path / "out")]
    assert main(base + ["--model", str(tmp_path / "nope.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "neither an existing checkpoint" in err and "Traceback" not in err
    assert main(base + ["--model", str(model_path), "--num-codebooks", "9"]) == 2
    assert "--num-codebooks must be in 1..4" in capsys.readouterr().err
    (tmp_path / "junk.safetensors").write_text("hello")
    assert main(base + ["--model", str(tmp_path / "junk.safetensors")]) == 2
    assert "error: cannot read safetensors file" in capsys.readouterr().err
    assert main(base + ["-q"]) == 0       # without --model: the embedded default codec
    assert (tmp_path / "out" / "a.npz").is_file()
    with pytest.raises(SystemExit):
        main(base + ["--model", str(model_path), "--batch-size", "0"])
    # a missing input is a failure of that input, others still run
    assert main(["encode", str(tmp_path / "missing.wav"), str(tmp_path / "data"), "-o", str(tmp_path / "o2"),
                 "--model", str(model_path), "-q"]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    assert (tmp_path / "o2" / "a.npz").is_file()


def test_resolve_model(model_path):
    assert resolve_model(str(model_path), num_codebooks=2).num_codebooks == 2
    assert resolve_model(None).name == audiocodec.load_codec(audiocodec.DEFAULT_CODEC).name   # the default
    with pytest.raises(audiocodec.ConfigError, match="neither an existing checkpoint"):
        resolve_model("no-such-model")


def test_python_m_audiocodec_info():
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    r = subprocess.run([sys.executable, "-m", "audiocodec", "info"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "encodec-24k" in r.stdout and "wavtokenizer-75" in r.stdout


def test_convert_to_float16_halves_the_file_and_loads_as_the_rounded_model(tmp_path, model_path):
    from safetensors import safe_open
    from audiocodec.codecs.io import CODEBOOK_KEYS
    dst = tmp_path / "half.safetensors"
    assert main(["convert", str(model_path), str(dst), "--dtype", "float16"]) == 0
    with safe_open(str(dst), framework="pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    codebooks = {k for k in dtypes if k.startswith("quantizer.") and k.endswith(CODEBOOK_KEYS)}
    assert codebooks and {dtypes[k] for k in codebooks} == {"F32"}     # the code vectors stay fp32 ...
    assert "F32" not in {d for k, d in dtypes.items() if k not in codebooks} and "F16" in dtypes.values()
    assert dst.stat().st_size < 0.55 * Path(model_path).stat().st_size
    full = audiocodec.load_codec(model_path, inference=False)
    half = audiocodec.load_codec(dst, inference=False)
    for (k, a), b in zip(full.state_dict().items(), half.state_dict().values()):
        assert b.dtype == a.dtype, k                      # loaded back in the model's precision
        rounded = a if k in codebooks else a.half().to(a.dtype)
        assert torch.equal(b, rounded if a.is_floating_point() else a), k
    assert half.fingerprint() == full.fingerprint()      # ... so tokens and LMs stay bound to the fp16 file


def test_audiocodec_demo_runs_the_checkout_app(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--help"])           # the app's own parser answers
    assert e.value.code == 0 and "--tts-model" in capsys.readouterr().out
