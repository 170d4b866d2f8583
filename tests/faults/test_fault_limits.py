"""Inference limits: long inputs are coded in chunks with memory that does not grow with their length (the
embedded default codec, peak RSS of child processes); malformed or foreign codes files and out-of-range
tokens give clear errors, in the API and in ``audiocodec decode``; concurrent requests never mix.

Set ``AUDIOCODEC_LONG_FAULT_TESTS=1`` to also code a 10-minute and a 60-minute input with the default chunking
(about 8 minutes of CPU).
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import audiocodec
from audiocodec import Codes, CodesError
from audiocodec.cli import main as cli_main
from faults_support import PYTHON, ROOT, subprocess_env, tiny_codec

PROBE = r'''
import json, sys
import torch
torch.set_num_threads(1)
import audiocodec

seconds, chunk, context = (float(a) for a in sys.argv[1:4])
codec = audiocodec.load_codec(audiocodec.DEFAULT_CODEC)
if chunk > 0:
    codec.chunk_seconds, codec.context_seconds = chunk, context
else:
    codec.chunk_seconds = 1e9  # no chunking: the control
n = int(seconds * codec.sample_rate)
g = torch.Generator().manual_seed(0)
t = torch.arange(n) / codec.sample_rate
wav = (0.3 * torch.sin(2 * torch.pi * 220 * t) * torch.sin(2 * torch.pi * 0.5 * t)
       + 0.05 * torch.randn(n, generator=g))[None, None]
del t


def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024


# getrusage's ru_maxrss survives exec: a child starts with its parent's peak (pytest's, which grows over the
# session). The peak of this process's own memory is VmHWM, which /proc/self/clear_refs resets.
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS")
except OSError:
    base = status("VmHWM")
peak = lambda: status("VmHWM")  # noqa: E731
codes = codec.encode(wav)
encoded = peak()
audio = codec.decode(codes)
decoded = peak()
print(json.dumps(dict(samples=n, frames=int(codes.tokens.shape[-1]), out=int(audio.shape[-1]), base=base,
                      encode=encoded - base, decode=decoded - base)))
'''


def _probe(tmp_path: Path, seconds: float, chunk: float, context: float = 0.5) -> dict:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    out = subprocess.run([PYTHON, str(script), str(seconds), str(chunk), str(context)], cwd=ROOT,
                         env=subprocess_env(), capture_output=True, text=True, timeout=3000)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["out"] == result["samples"]  # decoded to exactly the input's duration
    assert result["frames"] == -(-result["samples"] // 320)
    return result


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc (Linux)")
def test_long_input_codes_in_chunks_with_memory_that_does_not_grow_with_length(tmp_path):
    """Peak memory (RSS high-water mark of a child process) of encode + decode with the default codec, 10 s and
    40 s in 2 s chunks: 30 s more audio costs only its own buffers (output, a few copies: tens of bytes per
    sample), not activations (hundreds of bytes per sample, as the unchunked control shows)."""
    short, long = _probe(tmp_path, 10, 2.0), _probe(tmp_path, 40, 2.0)
    control = _probe(tmp_path, 5, 0)  # unchunked, to show that the measure sees activations
    per_extra_sample = (long["decode"] - short["decode"]) / (long["samples"] - short["samples"])
    unchunked_per_sample = control["decode"] / control["samples"]
    print(f"chunked: {short['decode'] / 2**20:.0f} MiB for 10 s, {long['decode'] / 2**20:.0f} MiB for 40 s "
          f"({per_extra_sample:.1f} B per extra sample); unchunked: {unchunked_per_sample:.0f} B per sample")
    assert per_extra_sample < 48               # 12 float32 copies of the audio at most
    assert unchunked_per_sample > 4 * 48       # activations, had they grown with the length, would show
    assert short["decode"] < 400 * 2**20       # one window's activations


@pytest.mark.skipif(not os.environ.get("AUDIOCODEC_LONG_FAULT_TESTS"), reason="set AUDIOCODEC_LONG_FAULT_TESTS=1")
def test_an_hour_codes_with_the_memory_of_ten_minutes(tmp_path):
    ten, hour = _probe(tmp_path, 600, 60.0, 1.0), _probe(tmp_path, 3600, 60.0, 1.0)
    per_extra_sample = (hour["decode"] - ten["decode"]) / (hour["samples"] - ten["samples"])
    print(f"10 min: {ten['decode'] / 2**20:.0f} MiB, 60 min: {hour['decode'] / 2**20:.0f} MiB, "
          f"{per_extra_sample:.1f} B per extra sample")
    assert per_extra_sample < 48


# -- bad codes files ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def codec():
    return tiny_codec(seed=0)


@pytest.fixture(scope="module")
def good(codec):
    return codec.encode(torch.randn(1, 1, 7000) * 0.1, sample_rate=16000)


def _arrays(codes: Codes) -> dict:
    """The arrays :meth:`Codes.save` writes."""
    return {"tokens": codes.tokens.numpy().astype(np.int16), "lengths": codes.lengths.numpy(),
            "input_lengths": codes.input_lengths.numpy(), "header": _header(codes)}


def _header(codes: Codes, **changes) -> np.ndarray:
    h = dict(format="audiocodec.codes", version=1, model_id=codes.model_id, fingerprint=codes.fingerprint,
             sample_rate=codes.sample_rate, frame_rate=codes.frame_rate, cardinality=codes.cardinality,
             input_sample_rate=codes.input_sample_rate, input_channels=codes.input_channels, extra={})
    h.update(changes)
    return np.frombuffer(json.dumps(h).encode(), dtype=np.uint8)


def _forged_shape(path: Path, good: Codes) -> None:
    good.save(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(buf, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "tokens.npy":
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(header, {"descr": "<i2", "fortran_order": False,
                                                              "shape": (1, 2, 10 ** 10)})
                data = header.getvalue() + data[len(header.getvalue()):]
            dst.writestr(item, data)
    path.write_bytes(buf.getvalue())


def _zip_version(path: Path, good: Codes) -> None:
    good.save(path)
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 6: central + 8] = (184).to_bytes(2, "little")  # "version needed to extract": 18.4
    path.write_bytes(bytes(data))


def _bomb(path: Path, good: Codes) -> None:
    arrays = _arrays(good)
    np.savez_compressed(path, **arrays, padding=np.zeros(24 * 2 ** 20, dtype=np.uint8))


def _savez(**changes):
    def make(path: Path, good: Codes) -> None:
        arrays = _arrays(good)
        arrays.update({k: (v(good) if callable(v) else v) for k, v in changes.items()})
        np.savez(path, **arrays)
    return make


def _bytes(fn):
    def make(path: Path, good: Codes) -> None:
        good.save(path)
        path.write_bytes(fn(path.read_bytes()))
    return make


MARKER = Path(tempfile.gettempdir()) / f"audiocodec-faults-pwned-{os.getpid()}"


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


#: file name -> (how to make it from good codes, what the error must say)
BAD_CODES = {
    "truncated": (_bytes(lambda b: b[: len(b) // 2]), "cannot read codes file"),
    "garbage": (_bytes(lambda b: bytes(np.random.default_rng(0).integers(0, 256, len(b), dtype=np.uint8))),
                "cannot read codes file"),
    "empty": (_bytes(lambda b: b""), "cannot read codes file"),
    "pickled": (_savez(tokens=np.array([_Evil()], dtype=object)), "cannot read codes file .*allow_pickle"),
    "forged_shape": (_forged_shape, r"declares int16 \(1, 2, 10000000000\).*but holds"),
    "zip_version": (_zip_version, "cannot read codes file .*version"),
    "zip_bomb": (_bomb, "inflates from"),
    "not_codes": (lambda p, g: np.savez(p, a=np.zeros(3)), "lacks"),
    "list_header": (_savez(header=np.frombuffer(b"[1, 2]", dtype=np.uint8)), "corrupt header: expected a JSON object"),
    "future_version": (_savez(header=lambda g: _header(g, version=99)), "format version 99.*upgrade"),
    "zero_rate": (_savez(header=lambda g: _header(g, input_sample_rate=0)), "impossible header values: input_sample_rate 0"),
    "nan_frame_rate": (_savez(header=lambda g: _header(g, frame_rate=float("nan"))), "impossible header values: frame_rate"),
    "negative_length": (_savez(input_lengths=np.array([-5])), "negative input lengths"),
    "too_long": (_savez(input_lengths=np.array([10 ** 9])), r"input lengths \[1000000000\].*longer than"),
    "float_lengths": (_savez(lengths=np.array([1.5])), "lengths must be integers"),
    "out_of_range": (_savez(tokens=lambda g: (g.tokens.numpy() + 16).astype(np.int16)), "tokens out of range"),
    "other_model": (_savez(header=lambda g: _header(g, model_id="other-codec")), "made by 'other-codec'"),
    "other_training": (_savez(header=lambda g: _header(g, fingerprint="0123456789ab")), "made by another"),
    "other_rate": (_savez(header=lambda g: _header(g, sample_rate=16000, frame_rate=50.0)), "codes are for 16000 Hz"),
    "too_many_codebooks": (_savez(tokens=lambda g: np.zeros((1, 5, g.tokens.shape[-1]), np.int16)),
                           "codes have 5 codebooks; this codec has 1..2"),
    "too_big_cardinality": (_savez(header=lambda g: _header(g, cardinality=1024),
                                   tokens=lambda g: np.full(g.tokens.shape, 1000, np.int16)),
                            r"tokens out of range: found values in \[1000, 1000\] but the codebook has 16"),
}


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory, good):
    folder = tmp_path_factory.mktemp("codes")
    for name, (make, _) in BAD_CODES.items():
        make(folder / f"{name}.npz", good)
    good.save(folder / "good.npz")
    return folder


@pytest.mark.parametrize("name", sorted(BAD_CODES))
def test_bad_codes_file_gives_a_clear_error(bad_folder, codec, name):
    _, message = BAD_CODES[name]
    with pytest.raises(CodesError, match=message):
        codec.decode(Codes.load(bad_folder / f"{name}.npz"))


def test_decode_command_reports_every_bad_file_and_decodes_the_good_one(bad_folder, codec, tmp_path, capsys):
    model = audiocodec.save_codec(codec, tmp_path / "tiny.safetensors")
    out = tmp_path / "wav"
    rc = cli_main(["decode", str(bad_folder), "-o", str(out), "--model", str(model), "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and not MARKER.exists()
    assert f"decoded 1 file(s), {len(BAD_CODES)} failed" in err
    report = err.split("failures:")[1]
    for name, (_, message) in BAD_CODES.items():
        line = next(line for line in report.splitlines() if f"{name}.npz:" in line)
        assert re.search(message, line), line
    assert sf.info(str(out / "good.wav")).frames == 10500   # 7000 samples at 16 kHz -> 24 kHz


def test_codes_survive_a_round_trip_through_the_cli(tmp_path, codec):
    wav = torch.randn(2, 4567) * 0.1
    sf.write(tmp_path / "x.wav", wav.T.numpy(), 22050)
    model = audiocodec.save_codec(codec, tmp_path / "m.safetensors")
    assert cli_main(["encode", str(tmp_path / "x.wav"), "-o", str(tmp_path / "c"), "--model", str(model), "-q",
                     "--device", "cpu"]) == 0
    codes = Codes.load(tmp_path / "c" / "x.npz")
    assert codes.input_sample_rate == 22050 and codes.input_channels == 2 and int(codes.input_lengths[0]) == 4567
    assert codec.decode(codes).shape[-1] == round(4567 * 24000 / 22050)


# -- concurrency ------------------------------------------------------------------------------------------

def test_concurrent_requests_from_threads_never_mix_outputs(codec):
    """Each thread encodes and decodes its own inputs (of different lengths) through one shared codec; every
    result equals the single-threaded one."""
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(1, 1, int(n), generator=g) * 0.2 for n in torch.randint(2000, 9000, (16,), generator=g)]
    expected = []
    for x in inputs:
        codes = codec.encode(x)
        expected.append((codes.tokens, codec.decode(codes)))
    results: dict = {}
    errors: list = []

    def worker(ids):
        try:
            for _ in range(3):
                for i in ids:
                    codes = codec.encode(inputs[i])
                    results.setdefault(i, []).append((codes.tokens, codec.decode(codes)))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(list(range(k, 16, 4)),)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, (tokens, audio) in enumerate(expected):
        assert len(results[i]) == 3
        for got_tokens, got_audio in results[i]:
            assert torch.equal(got_tokens, tokens) and torch.equal(got_audio, audio), i


def test_concurrent_saves_to_one_codes_file_never_mix_their_bytes(tmp_path, codec):
    a = codec.encode(torch.randn(1, 1, 24000) * 0.1)
    b = codec.encode(torch.randn(1, 1, 48000) * 0.1)
    path = tmp_path / "same.npz"
    errors: list = []

    def saver(codes):
        try:
            for _ in range(30):
                codes.save(path)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=saver, args=(c,)) for c in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    loaded = Codes.load(path)
    assert any(torch.equal(loaded.tokens, c.tokens) for c in (a, b))
    assert [p.name for p in tmp_path.iterdir()] == ["same.npz"]   # no temporary file left


def test_a_failed_save_leaves_no_partial_file(tmp_path, codec, monkeypatch):
    codes = codec.encode(torch.randn(1, 1, 4000) * 0.1)

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="No space"):
        codes.save(tmp_path / "c.npz")
    assert list(tmp_path.iterdir()) == []
