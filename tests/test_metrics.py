"""Codec evaluation: signal metrics, codebook statistics, model-based scorer interface, eval CLI."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import audiocodec
from audiocodec import CheckpointError, Codes, ConfigError
from audiocodec.cli import main
from audiocodec.metrics import (CodebookStats, evaluate_dirs, load_model_scorer, mel_distance, pair_files,
                                pesq_wb, prepare_pair, score_pair, si_sdr, stft_distance, stoi, summarize, voicing,
                                vuv_f1)
from audiocodec.metrics import evaluate as ev

pytest.importorskip("pesq")
pytest.importorskip("pystoi")

SR = 16000


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These small tensor ops are fastest on one thread (as evaluate's workers run them), above all on a
    busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def voiced(seconds: float = 2.0, sr: int = SR, f0: float = 140.0, gaps: bool = True, seed: int = 0) -> np.ndarray:
    """Harmonic tone with 5 Hz vibrato; with ``gaps``, switched off about a third of the time (syllables)."""
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 5 * t + seed))) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    if gaps:
        x = x * (np.sin(2 * np.pi * 1.1 * t + seed) > -0.5)
    return (0.25 * x).astype(np.float32)


def noise(seconds: float = 2.0, sr: int = SR, level: float = 0.1, seed: int = 1) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


# -- signal metrics ------------------------------------------------------------------------------------

def test_identical_signals_are_perfect():
    x = voiced()
    values, notes = score_pair(x, x, SR, metrics=("pesq", "stoi", "estoi", "si_sdr", "mel_distance",
                                                  "stft_distance", "vuv_f1"))
    assert values["pesq"] > 4.5 and values["pesq"] <= 4.65          # wide-band maximum is 4.64
    assert values["stoi"] == pytest.approx(1.0, abs=1e-4)
    assert values["estoi"] == pytest.approx(1.0, abs=1e-4)
    assert values["si_sdr"] > 80
    assert values["mel_distance"] == 0.0 and values["stft_distance"] == 0.0
    assert values["vuv_f1"] == 1.0
    assert notes == {}


def test_noise_degrades_monotonically():
    x = voiced()
    scores = []
    for level in (0.001, 0.01, 0.1):
        y = x + noise(level=level)
        values, _ = score_pair(x, y, SR)
        scores.append(values)
    for metric in ("pesq", "stoi", "si_sdr"):
        seq = [s[metric] for s in scores]
        assert seq[0] > seq[1] > seq[2], (metric, seq)
    for metric in ("mel_distance", "stft_distance"):
        seq = [s[metric] for s in scores]
        assert seq[0] < seq[1] < seq[2], (metric, seq)


def test_si_sdr_scale_invariance_and_batching():
    x, y = voiced(1.0), voiced(1.0) + noise(1.0, level=0.05)
    base = si_sdr(x, y)
    assert base.shape == ()
    for scale in (0.01, 0.5, 7.0):
        assert si_sdr(x, scale * y) == pytest.approx(float(base), abs=1e-6)
    assert si_sdr(x, y + 0.3) == pytest.approx(float(base), abs=1e-6)        # zero-mean: offset-invariant
    batch = np.stack([np.stack([x, x, x]), np.stack([y, y, y])])            # [2, 3, L]
    out = si_sdr(batch, torch.from_numpy(np.stack([np.stack([y, y, y])] * 2)))
    assert out.shape == (2, 3)
    assert out[0, 0] == pytest.approx(float(base), abs=1e-6) and out[1, 0] > 80
    assert mel_distance(batch, batch, SR).shape == (2, 3)
    assert stft_distance(batch, batch).shape == (2, 3)


def test_vuv_f1():
    x = voiced()
    assert float(vuv_f1(x, x, SR)) == 1.0
    assert float(vuv_f1(x, noise(), SR)) < 0.2
    v = voicing(x, SR)
    gate = np.sin(2 * np.pi * 1.1 * np.arange(len(x)) / SR) > -0.5
    assert abs(v["voiced"].mean() - gate.mean()) < 0.1                     # voiced where the tone is on
    assert np.median(v["f0"][v["voiced"]]) == pytest.approx(140, rel=0.05)
    f1, reasons = vuv_f1(noise(), noise(seed=2), SR, return_reasons=True)   # no voiced frame anywhere
    assert math.isnan(float(f1)) and "no voiced frame" in reasons[0]


def test_silent_and_short_inputs_give_nan_with_reason(caplog):
    x, silent = voiced(), np.zeros(2 * SR, dtype=np.float32)
    with caplog.at_level("WARNING", logger="audiocodec.metrics"):
        score, reasons = pesq_wb(silent, x, SR, return_reasons=True)
    assert math.isnan(float(score)) and reasons == ["reference is silent"]
    assert "reference is silent" in caplog.text
    values, notes = score_pair(silent, x, SR)                            # no crash, every NaN explained
    for m in ("pesq", "stoi", "si_sdr", "stft_distance"):
        assert math.isnan(values[m]) and notes[m]
    score, reasons = pesq_wb(x, silent, SR, return_reasons=True)         # silent output: worst, not NaN
    assert 1.0 <= float(score) < 1.3 and "silent" in reasons[0]
    score, reasons = pesq_wb(x[:2000], x[:2000], SR, return_reasons=True)
    assert math.isnan(float(score)) and "short" in reasons[0]
    score, reasons = stoi(x[:3000], x[:3000], SR, return_reasons=True)
    assert math.isnan(float(score)) and reasons[0]


def test_prepare_pair_resamples_and_trims():
    ref = np.stack([voiced(1.0), voiced(1.0)])                            # stereo [2, L] at 16 kHz
    hyp = voiced(1.2, sr=24000)                                            # longer, 24 kHz
    r, h, sr = prepare_pair(ref, SR, hyp, 24000)
    assert sr == SR and r.shape == h.shape == (SR,)
    assert float(si_sdr(r, h)) > 25


def test_bad_metric_name():
    with pytest.raises(ConfigError, match="unknown metric"):
        score_pair(voiced(1.0), voiced(1.0), SR, metrics=["pesq", "mos"])


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_real_synthetic_speech(tmp_path):
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "The quick brown fox jumps over the lazy dog."], check=True,
                   capture_output=True)
    x, sr = sf.read(wav, dtype="float32")
    same, _ = score_pair(x, x, sr)
    assert same["pesq"] > 4.5 and same["stoi"] > 0.999 and same["vuv_f1"] == 1.0
    assert 0.2 < voicing(x, sr)["voiced"].mean() < 0.9
    noisy = [score_pair(x, x + noise(len(x) / sr, sr, level, seed=3)[: len(x)], sr)[0] for level in (0.003, 0.03)]
    for m in ("pesq", "stoi", "si_sdr", "vuv_f1"):
        assert same[m] > noisy[0][m] > noisy[1][m], m


# -- summary ------------------------------------------------------------------------------------------------

def test_summary_statistics():
    rows = [dict(a=1.0), dict(a=2.0), dict(a=3.0), dict(a=math.nan)]
    s = summarize(rows, ["a"])["a"]
    assert s["mean"] == 2.0 and s["std"] == 1.0 and s["count"] == 3 and s["nan"] == 1
    assert s["ci95"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)


# -- codebook statistics ---------------------------------------------------------------------------------

def test_codebook_stats_known_distributions():
    card = 16
    uniform = torch.arange(card).repeat(10)                                # each code 10 times
    collapsed = torch.zeros(card * 10, dtype=torch.long)
    half = torch.arange(card // 2).repeat(20)
    tokens = torch.stack([uniform, collapsed, half])[None]                  # [1, 3, 160]
    stats = CodebookStats(cardinality=card, frame_rate=50.0).update(tokens, seconds=3.2)
    np.testing.assert_allclose(stats.perplexity(), [card, 1, card // 2], rtol=1e-9)
    np.testing.assert_allclose(stats.utilisation(), [1.0, 1 / card, 0.5])
    np.testing.assert_array_equal(stats.dead_codes(), [0, card - 1, card // 2])
    np.testing.assert_allclose(stats.entropy(), [4, 0, 3])
    br = stats.bitrate()
    assert br["nominal_bps"] == 50 * 3 * 4
    assert br["measured_bps"] == pytest.approx(160 * 3 * 4 / 3.2)
    assert br["entropy_bps"] == pytest.approx(50 * (4 + 0 + 3))
    summary = stats.summary()
    json.dumps(summary, allow_nan=False)
    assert summary["total_dead_codes"] == card - 1 + card // 2 and summary["num_codebooks"] == 3


def test_codebook_stats_from_codes_ignore_padding():
    tokens = torch.zeros(2, 1, 10, dtype=torch.long)
    tokens[0, 0, :4] = torch.tensor([1, 2, 3, 4])
    tokens[1, 0, :] = 5                                                     # item 1: only 2 valid frames
    codes = Codes(tokens=tokens, lengths=torch.tensor([4, 2]), model_id="m", sample_rate=24000, frame_rate=75.0,
                  cardinality=8, input_sample_rate=24000, input_lengths=torch.tensor([1280, 640]))
    stats = CodebookStats().update(codes)
    assert stats.counts[0].tolist() == [0, 1, 1, 1, 1, 2, 0, 0]
    assert stats.seconds == pytest.approx(1920 / 24000)
    other = CodebookStats().update(codes)
    assert stats.merge(other).counts[0].sum() == 12


def test_codebook_stats_on_a_codec():
    codec = _tiny_codec()
    stats = CodebookStats()
    for seed in range(2):
        stats.update(codec.encode(torch.from_numpy(voiced(0.5, 24000, seed=seed)), sample_rate=24000))
    assert stats.num_codebooks == codec.num_codebooks and stats.cardinality == codec.cardinality
    assert stats.bitrate()["nominal_bps"] == pytest.approx(codec.bitrate)
    assert (stats.frames == 2 * math.ceil(12000 / codec.hop_length)).all()


# -- model-based scores ------------------------------------------------------------------------------------

class _Loudness(torch.nn.Module):
    def forward(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return wav.abs().mean(-1) * 10 + sample_rate / 16000


def _save_torchscript(module: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)               # torch.jit is deprecated in torch 2.11
        torch.jit.script(module).save(str(path))
    return path


def test_model_scorer_from_torchscript(tmp_path):
    path = _save_torchscript(_Loudness(), tmp_path / "scorer.pt")
    scorer = load_model_scorer(path, name="toy")
    assert scorer.pass_sample_rate
    x = voiced(1.0, 24000)
    out = scorer.score([x, 2 * x], 24000)
    assert out.shape == (2,) and out[1] > out[0] > 1.0


def test_model_scorer_from_torch_export(tmp_path):
    class Mean(torch.nn.Module):
        def forward(self, wav):
            return wav.abs().mean(-1)
    length = torch.export.Dim("L", min=100, max=10 ** 7)
    program = torch.export.export(Mean(), (torch.randn(1, 16000),), dynamic_shapes={"wav": {1: length}})
    torch.export.save(program, str(tmp_path / "mean.pt2"))
    scorer = load_model_scorer(tmp_path / "mean.pt2", name="mean")
    assert not scorer.pass_sample_rate
    x = voiced(0.7, 22050)
    assert scorer.score([x], 22050)[0] == pytest.approx(float(np.abs(x).mean()), rel=0.05)


def test_model_scorer_refuses_state_dicts_and_missing_files(tmp_path):
    torch.save(_Loudness().state_dict() | {"w": torch.zeros(2)}, tmp_path / "utmos.ckpt")
    with pytest.raises(CheckpointError, match="not a TorchScript"):
        load_model_scorer(tmp_path / "utmos.ckpt")
    (tmp_path / "utmos.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a TorchScript"):
        load_model_scorer(tmp_path / "utmos.safetensors")
    with pytest.raises(ConfigError, match="nothing is downloaded"):
        load_model_scorer(tmp_path / "absent.pt")


# -- evaluation of folders / manifests and the CLI ------------------------------------------------------

def _tiny_codec():
    torch.manual_seed(0)
    small = dict(n_filters=4, dimension=32, lstm=0)
    return audiocodec.build_codec("encodec-24k", num_codebooks=4, encoder=small, decoder=small,
                                  quantizer=dict(num_quantizers=4, codebook_size=64, dim=32, kmeans_init=False))


def _write_dirs(root: Path) -> tuple[Path, Path]:
    ref, hyp = root / "ref", root / "hyp"
    for i, name in enumerate(["a", "sub/b", "c"]):
        x = voiced(1.0, SR, f0=120 + 30 * i, seed=i)
        (ref / name).parent.mkdir(parents=True, exist_ok=True)
        (hyp / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(ref / f"{name}.wav", x, SR)
        y = np.interp(np.arange(24000) / 24000, np.arange(SR) / SR, x) + noise(1.0, 24000, 0.01, seed=i)
        sf.write(hyp / f"{name}.flac", y[: 24000 - 100 * i], 24000)                     # other rate, shorter
    sf.write(ref / "silent.wav", np.zeros(SR, dtype=np.float32), SR)
    sf.write(hyp / "silent.wav", voiced(1.0), SR)
    (hyp / "moved").mkdir()
    shutil.move(hyp / "c.flac", hyp / "moved" / "c.flac")                               # pairs by stem
    sf.write(ref / "only_ref.wav", voiced(0.5), SR)
    sf.write(hyp / "only_hyp.wav", voiced(0.5), SR)
    return ref, hyp


def test_pair_files(tmp_path):
    ref, hyp = _write_dirs(tmp_path)
    pairs, ref_only, hyp_only = pair_files(ref, hyp)
    assert [k for k, _, _ in pairs] == ["a", "c", "silent", "sub/b"]
    assert ref_only == [ref / "only_ref.wav"] and hyp_only == [hyp / "only_hyp.wav"]


def test_eval_cli_on_dirs(tmp_path, capsys):
    ref, hyp = _write_dirs(tmp_path)
    out = tmp_path / "eval.json"
    assert main(["eval", str(ref), str(hyp), "--json", str(out), "-q", "-j", "1"]) == 0
    captured = capsys.readouterr()
    assert "pesq" in captured.out and "only_ref.wav" in captured.err and "only_hyp.wav" in captured.err
    assert "reference is silent" in captured.err
    d = json.loads(out.read_text())
    assert {"info", "metrics", "summary", "count", "unmatched", "failures", "files"} <= set(d)
    assert d["count"] == 4 and len(d["files"]) == 4 and d["failures"] == []
    assert d["unmatched"] == {"ref_only": [str(ref / "only_ref.wav")], "hyp_only": [str(hyp / "only_hyp.wav")]}
    for m in ("pesq", "stoi", "si_sdr", "mel_distance", "stft_distance", "vuv_f1"):
        assert set(d["summary"][m]) >= {"mean", "std", "count", "nan", "ci95"}
        assert d["summary"][m]["count"] + d["summary"][m]["nan"] == 4
    assert d["summary"]["pesq"]["nan"] == 1 and d["summary"]["pesq"]["count"] == 3
    silent = next(f for f in d["files"] if f["file"] == "silent")
    assert silent["pesq"] is None and silent["notes"]["pesq"] == "reference is silent"
    b = next(f for f in d["files"] if f["file"] == "sub/b")
    assert b["seconds"] == pytest.approx((24000 - 100) / 24000, abs=1e-3) and b["si_sdr"] > 15


def test_eval_cli_with_a_local_model_score(tmp_path):
    ref, hyp = _write_dirs(tmp_path)
    _save_torchscript(_Loudness(), tmp_path / "toy_utmos.pt")
    out = tmp_path / "eval.json"
    assert main(["eval", str(ref), str(hyp), "--metrics", "si_sdr", "--utmos", str(tmp_path / "toy_utmos.pt"),
                 "--json", str(out), "-q", "-j", "1"]) == 0
    d = json.loads(out.read_text())
    assert d["metrics"] == ["si_sdr", "utmos", "utmos_ref"]
    assert d["summary"]["utmos"]["count"] == 4 and all(f["utmos_ref"] >= 1.0 for f in d["files"])


def test_eval_cli_argument_errors(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert main(["eval", str(tmp_path), str(tmp_path), "--manifest", "m.jsonl"]) == 2
    assert main(["eval", str(tmp_path / "nope"), str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_eval_cli_manifest(tmp_path, capsys):
    model = audiocodec.save_codec(_tiny_codec(), tmp_path / "tiny.safetensors")
    (tmp_path / "wavs").mkdir()
    lines = []
    for i, sr in enumerate((16000, 24000, 22050)):
        sf.write(tmp_path / "wavs" / f"u{i}.wav", voiced(0.6 + 0.1 * i, sr, seed=i), sr)
        lines.append(json.dumps({"path": f"wavs/u{i}.wav", "offset": 0.0, "duration": 0.6}))
    lines.append(json.dumps({"audio_filepath": "wavs/missing.wav", "duration": 1.0}))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "eval.json"
    rc = main(["eval", "--manifest", str(manifest), "--model", str(model), "--num-codebooks", "2", "-b", "2",
               "--json", str(out), "-q", "--save-audio", str(tmp_path / "recon"), "--metrics", "si_sdr,mel_distance"])
    assert rc == 1                                                          # the missing file failed
    d = json.loads(out.read_text())
    assert d["count"] == 3 and d["metrics"] == ["si_sdr", "mel_distance"]
    assert [f["file"] for f in d["failures"]] == ["wavs/missing.wav"]
    cb = d["codebooks"]
    assert cb["num_codebooks"] == 2 and cb["cardinality"] == 64 and cb["items"] == 3
    assert cb["bitrate"]["nominal_bps"] == pytest.approx(75 * 2 * 6)
    assert cb["bitrate"]["measured_bps"] >= cb["bitrate"]["nominal_bps"] * 0.99
    assert len(cb["perplexity"]) == 2 and cb["frames"][0] == 3 * 45
    assert d["info"]["num_codebooks"] == 2
    assert all(f["seconds"] == pytest.approx(0.6, abs=1e-3) for f in d["files"])
    assert sorted(p.name for p in (tmp_path / "recon" / "wavs").iterdir()) == ["u0.wav", "u1.wav", "u2.wav"]
    assert "codebooks:" in capsys.readouterr().out


def test_evaluate_dirs_in_a_process_pool(tmp_path, monkeypatch):
    ref, hyp = _write_dirs(tmp_path)
    inline = evaluate_dirs(ref, hyp, metrics=["si_sdr", "stoi"], workers=1)
    monkeypatch.setattr(ev, "MIN_SECONDS_FOR_POOL", 1.0)
    started = []

    class Pool(ev.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            started.append(kwargs["max_workers"])
            super().__init__(*args, **kwargs)
    monkeypatch.setattr(ev, "ProcessPoolExecutor", Pool)
    pooled = evaluate_dirs(ref, hyp, metrics=["si_sdr", "stoi"], workers=2)
    assert started == [2]
    assert [r["file"] for r in pooled.rows] == [r["file"] for r in inline.rows]
    for a, b in zip(inline.rows, pooled.rows):
        np.testing.assert_allclose([a["si_sdr"], a["stoi"]], [b["si_sdr"], b["stoi"]], rtol=1e-6)


def test_read_manifest_formats(tmp_path):
    m = tmp_path / "sub" / "m.jsonl"
    m.parent.mkdir()
    m.write_text("\n".join([
        json.dumps({"path": "a.wav", "duration": 3.52, "sample_rate": 24000, "id": "utt1"}),   # training format
        json.dumps({"audio_filepath": "/abs/b.flac", "offset": 1.0, "duration": 2.0}),         # a segment
        "# a comment", "", "c.wav", "c.wav"]) + "\n")
    entries = ev.read_manifest(m)
    assert [e["key"] for e in entries] == ["utt1", "/abs/b.flac", "c.wav", "c.wav#2"]
    assert entries[0]["path"] == m.parent / "a.wav" and entries[0]["duration"] is None
    assert (entries[1]["offset"], entries[1]["duration"]) == (1.0, 2.0)
    assert ev._output_name("/abs/b.flac") == "abs/b.wav" and ev._output_name("../../x.wav") == "x.wav"
    m.write_text('{"text": "no path"}\n')
    with pytest.raises(ConfigError, match="no audio path"):
        ev.read_manifest(m)


def test_interval_energy_contrast_follows_where_the_sound_is():
    from audiocodec.metrics import interval_energy_contrast
    sr = 16000
    x = torch.zeros(4 * sr)
    x[sr:2 * sr] = 0.3 * torch.randn(sr, generator=torch.Generator().manual_seed(0))
    on = interval_energy_contrast(x, sr, [(1.0, 2.0)])
    off = interval_energy_contrast(x, sr, [(2.5, 3.5)])
    assert on > 40 and off < -10                         # loud inside the right interval, quiet inside the wrong one
    assert interval_energy_contrast(torch.stack([x, x]), sr, [(1.0, 2.0)]) == pytest.approx(on, abs=1e-3)
    noise = 0.1 * torch.randn(4 * sr, generator=torch.Generator().manual_seed(1))
    assert abs(interval_energy_contrast(noise, sr, [(1.0, 2.0)])) < 1.0   # steady sound: no contrast
    with pytest.raises(ConfigError, match="cover some but not all"):
        interval_energy_contrast(x, sr, [(10.0, 11.0)])
    with pytest.raises(ConfigError, match="cover some but not all"):
        interval_energy_contrast(x, sr, [])
