"""The offline mini corpus (egs/mini/local/make_corpus.py) at toy scale.

Needs the Debian packages espeak-ng, fluidsynth and fluid-soundfont-gm (egs/mini/local/install_tools.sh).
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from audiocodec.data import AudioCropDataset, make_dataloader, read_manifest
from audiocodec.data.synth import (MidiFile, make_piece, make_sentences, missing_tools, plan_corpus,
                                   render_speech)

ROOT = Path(__file__).resolve().parents[1]
MISSING = missing_tools()
needs_tools = pytest.mark.skipif(
    bool(MISSING), reason=f"mini corpus tools not installed: {' '.join(MISSING)} "
                          "(apt-get install espeak-ng fluidsynth fluid-soundfont-gm, or egs/mini/local/install_tools.sh)")


def test_sentences_and_midi_need_no_tools():
    s = make_sentences(300, seed=0)
    assert len(s) == len(set(s)) == 300 and s == make_sentences(300, seed=0)
    assert any(x.endswith("?") for x in s) and any(x.endswith("!") for x in s) and any('"' in x for x in s)
    assert make_sentences(50, seed=1) != s[:50]
    midi, meta = make_piece("piano", seed=3, seconds=3.0)
    data = midi.to_bytes()
    assert data[:4] == b"MThd" and data.count(b"MTrk") == len(midi.tracks) and meta["family"] == "piano"
    assert make_piece("piano", seed=3, seconds=3.0)[0].to_bytes() == data
    m = MidiFile()
    m.set_tempo(120)
    t = m.add_track("x", 0, 0)
    m.note(t, 0, 60, 0, 480, 100)
    assert m.to_bytes().endswith(b"\x00\x90\x3c\x64\x83\x60\x80\x3c\x00\x00\xff\x2f\x00")  # 480 ticks = 83 60


def test_plan_holds_out_speakers_and_sentences():
    jobs, sentences, _ = plan_corpus("default", seed=0, accents=["en-us", "en-gb"], variants=["m1", "f1", "f2"])
    assert jobs == plan_corpus("default", seed=0, accents=["en-us", "en-gb"], variants=["m1", "f1", "f2"])[0]
    split = {s: [j for j in jobs if j.split == s] for s in ("train", "valid", "test")}
    for held in ("valid", "test"):
        assert not {j.speaker for j in split[held]} & {j.speaker for j in split["train"]}
        assert not {j.text for j in split[held] if j.text} & {j.text for j in split["train"] if j.text}
    assert 200 <= len(jobs) <= 1000


@needs_tools
def test_make_corpus_toy(tmp_path):
    out = tmp_path / "mini"
    cmd = [sys.executable, str(ROOT / "egs" / "mini" / "local" / "make_corpus.py"), str(out), "--scale", "toy",
           "--seed", "0", "--no-install", "--workers", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    splits = {s: read_manifest(out / f"{s}.jsonl") for s in ("train", "valid", "test")}
    assert 24 <= sum(len(v) for v in splits.values()) <= 40
    for held in ("valid", "test"):
        assert splits[held]
        assert not {r["speaker"] for r in splits[held]} & {r["speaker"] for r in splits["train"]}
        assert not {r.get("text") for r in splits[held] if r.get("text")} & \
            {r.get("text") for r in splits["train"] if r.get("text")}
    kinds = {r["kind"] for v in splits.values() for r in v}
    assert kinds == {"speech", "music"}
    for r in [r for v in splits.values() for r in v]:
        info = sf.info(r["path"])
        assert info.samplerate == 24000 and info.channels == 1 and r["sample_rate"] == 24000
        assert abs(info.frames / 24000 - r["duration"]) < 1e-3 and r["duration"] > 0.5
        if r["kind"] == "speech":
            assert r["text"] and r["language"] == "en"
    x, _ = sf.read(splits["train"][0]["path"])
    assert 0.05 < abs(x).max() <= 1.0
    info = json.loads((out / "corpus.json").read_text())
    assert info["complete"] and info["settings"]["scale"] == "toy"

    # the corpus feeds the training loader
    ds = AudioCropDataset(out / "train.jsonl", sample_rate=24000, crop_seconds=0.5, seed=0)
    batch = next(iter(make_dataloader(ds, batch_size=4)))
    assert batch["audio"].shape == (4, 1, 12000)

    # a second run reuses the clips (resume) and writes the same manifests
    before = (out / "train.jsonl").read_text()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and (out / "train.jsonl").read_text() == before


@needs_tools
def test_speech_rendering_is_deterministic(tmp_path):
    jobs, _, _ = plan_corpus("toy", seed=0)
    job = next(j for j in jobs if j.kind == "speech")
    a = render_speech(job.voice, job.text, tmp_path / "a.wav", random.Random(job.seed))
    b = render_speech(job.voice, job.text, tmp_path / "b.wav", random.Random(job.seed))
    assert a == b and (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()


def test_voice_variants_of_en_gb_sound_different(tmp_path):
    """espeak-ng 1.51 ignores a variant after 'en-gb': the corpus must not end up with identical speakers."""
    import random as _random
    import soundfile as _sf
    from audiocodec.data.synth import Voice, render_speech
    waves = []
    for variant in ("f2", "m3"):
        voice = Voice("x", "en-gb", variant, pitch=50, speed=160, amplitude=120, gap=0)
        render_speech(voice, "Hello there, this is a test.", tmp_path / f"{variant}.wav", _random.Random(0))
        waves.append(_sf.read(str(tmp_path / f"{variant}.wav"))[0])
    assert len(waves[0]) != len(waves[1]) or abs(waves[0] - waves[1]).max() > 1e-3


def test_manifests_of_a_corpus_built_in_a_relative_folder_point_at_its_files(tmp_path, monkeypatch):
    """Paths in a manifest are relative to the manifest's folder, whatever the current directory was."""
    from audiocodec.data.manifest import read_manifest
    from audiocodec.data.synth import build_corpus
    monkeypatch.chdir(tmp_path)
    build_corpus("rel/corpus", scale="toy", seed=0, workers=1)
    records = read_manifest(tmp_path / "rel" / "corpus" / "train.jsonl")
    assert records and all(Path(r["path"]).is_file() for r in records)
    raw = (tmp_path / "rel" / "corpus" / "train.jsonl").read_text()
    assert '"path": "wavs/' in raw
