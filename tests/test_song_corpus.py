"""The offline mini song corpus (audiocodec.data.song_synth) and the egs/mini/song recipe."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiocodec.data.manifest import read_manifest
from audiocodec.data.synth import missing_tools
from audiocodec.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "valid", "test")
SR = 24000


def _need_tools():
    if missing_tools():
        pytest.fail(f"the song corpus needs {' '.join(missing_tools())} (egs/mini/local/install_tools.sh)")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from audiocodec.data.song_synth import build_song_corpus
    _need_tools()
    out = tmp_path_factory.mktemp("songs") / "data"
    stats = build_song_corpus(out, scale="toy", seed=0, workers=2)
    return out, stats


def _read(path):
    x, sr = sf.read(str(path), dtype="float64", always_2d=True)
    assert sr == SR and x.shape[1] == 1
    return x[:, 0]


def _rms(x):
    return float(np.sqrt(np.mean(x ** 2)))


def _hz_to_midi(hz):
    return 69 + 12 * np.log2(hz / 440.0)


def test_toy_corpus_manifests_are_consistent(corpus):
    out, stats = corpus
    assert stats["complete"] and stats["seconds"] < 60
    assert sum(stats["splits"][s]["clips"] for s in SPLITS) == 12
    for split in SPLITS:
        mix = read_manifest(out / f"{split}.jsonl")
        vocal = read_manifest(out / f"{split}.vocal.jsonl")
        acc = read_manifest(out / f"{split}.accompaniment.jsonl")
        assert mix and [r["id"] for r in mix] == [r["id"] for r in vocal] == [r["id"] for r in acc]
        for m, v, a in zip(mix, vocal, acc):
            for key in ("lyrics", "description", "speaker", "genre", "bpm", "key"):
                assert m[key] not in (None, ""), key
            assert v["lyrics"] == a["lyrics"] == m["lyrics"] and v["speaker"] == m["speaker"]
            assert 5.0 <= m["duration"] <= 10.0
            assert abs(m["duration"] - v["duration"]) < 1 / 75 and abs(m["duration"] - a["duration"]) < 1 / 75
            xm, xv, xa = _read(m["path"]), _read(v["path"]), _read(a["path"])
            assert len(xm) == len(xv) == len(xa) == round(m["duration"] * SR)
            # the stems are stored at their level in the mix: mixture = vocal + accompaniment (16-bit rounding)
            assert np.abs(xm - (xv + xa)).max() < 1e-3
            assert np.abs(xm).max() < 1.0 and _rms(xv) > 0.005 and _rms(xa) > 0.005
            assert _rms(xv) / _rms(xa) == pytest.approx(m["vocal_gain"], rel=0.02)
            # descriptions come from the metadata
            desc = m["description"]
            assert m["genre"] in desc and f"{m['bpm']} bpm" in desc and m["key"] in desc
            assert m["gender"] in desc
            # the MIDI accompaniment plays the instruments the genre gives
            midi = (out / a["midi"]).read_bytes()
            assert midi.startswith(b"MThd")
            from audiocodec.data.song_synth import GENRES
            programs = {p for _, p in GENRES[m["genre"]].chords}
            assert any(bytes([0xC0, p]) in midi for p in programs)
    gains = [r["vocal_gain"] for s in SPLITS for r in read_manifest(out / f"{s}.jsonl")]
    assert max(gains) / min(gains) > 1.2   # the vocal level varies between songs


def test_held_out_lyrics_and_singers(corpus):
    out, _ = corpus
    recs = {s: read_manifest(out / f"{s}.jsonl") for s in SPLITS}
    lines = {s: {line for r in recs[s] for line in r["lyrics"].split("\n")} for s in SPLITS}
    assert lines["train"] and not lines["train"] & lines["test"] and not lines["train"] & lines["valid"]
    singers = {s: {r["speaker"] for r in recs[s]} for s in SPLITS}
    assert singers["test"] - singers["train"], "the test split should have a singer train never hears"
    assert len(singers["train"]) >= 2 and len({r["genre"] for r in recs["train"]}) >= 5
    info = json.loads((out / "singers.json").read_text())
    assert {r["gender"] for r in recs["train"]} == {"female", "male"}
    assert all(spk in info for s in SPLITS for spk in singers[s])


def test_sung_notes_follow_the_melody(corpus):
    import librosa
    out, _ = corpus
    checked, good = 0, 0
    for v in read_manifest(out / "train.vocal.jsonl")[:2] + read_manifest(out / "test.vocal.jsonl")[:1]:
        x = _read(v["path"]).astype(np.float32)
        notes = v["notes"]
        assert [n["word"].lower() for n in notes] == [w.lower() for w in
                                                      v["lyrics"].replace("\n", " ").split()]
        starts = [n["start"] for n in notes]
        assert starts == sorted(starts) and all(n["duration"] > 0.15 for n in notes)
        for n in notes:
            a, b = int((n["start"] + 0.05) * SR), int((n["start"] + n["duration"] - 0.03) * SR)
            if b - a < 2048:
                continue
            f0, voiced, _ = librosa.pyin(x[a:b], fmin=60, fmax=800, sr=SR, frame_length=2048)
            if not voiced.any():
                continue
            checked += 1
            good += abs(_hz_to_midi(np.median(f0[voiced])) - n["midi"]) < 1.0
            # silence before the first note (the intro is accompaniment only)
        assert np.abs(x[:int(max(0.0, starts[0] - 0.05) * SR)]).max(initial=0) < 1e-3
    assert checked >= 10 and good >= 0.9 * checked, (good, checked)
    # the melodies move: songs are not sung on one or two notes
    distinct = [len({n["midi"] for n in v["notes"]}) for v in read_manifest(out / "train.vocal.jsonl")]
    assert np.mean(distinct) >= 3.5 and min(distinct) >= 2, distinct


def test_sing_word_hits_pitch_and_length():
    import librosa
    from audiocodec.data.song_synth import Singer, sing_word
    _need_tools()
    singer = Singer("s", "en-us", None, "male", 90, 120, 50)
    for midi, seconds in ((57, 0.9), (45, 0.5)):
        y = sing_word(singer, "shine", midi, seconds)
        assert len(y) == round(seconds * SR) and np.abs(y).max() == pytest.approx(1.0)
        f0, voiced, _ = librosa.pyin(y[1200:-1200].astype(np.float32), fmin=60, fmax=800, sr=SR,
                                     frame_length=2048)
        assert voiced.mean() > 0.5
        assert abs(_hz_to_midi(np.median(f0[voiced])) - midi) < 0.5
    with pytest.raises(ConfigError):
        sing_word(singer, "shine", 57, 0.0)
    with pytest.raises(ConfigError):
        sing_word(singer, "  ", 57, 0.5)


def test_deterministic_and_resumable(corpus):
    from audiocodec.data.song_synth import build_song_corpus, plan_song_corpus
    out, _ = corpus
    first, lines, _ = plan_song_corpus("toy", 0)
    again, _, _ = plan_song_corpus("toy", 0)
    other, _, _ = plan_song_corpus("toy", 1)
    assert [(p.id, p.lyrics, p.description, p.bpm) for p in first] == \
           [(p.id, p.lyrics, p.description, p.bpm) for p in again]
    assert [p.lyrics for p in first] != [p.lyrics for p in other]
    manifest = (out / "train.jsonl").read_text()
    wav = out / "songs" / first[0].id / "mixture.wav"
    mtime = wav.stat().st_mtime_ns
    build_song_corpus(out, scale="toy", seed=0, workers=1)     # everything is there: nothing re-rendered
    assert wav.stat().st_mtime_ns == mtime and (out / "train.jsonl").read_text() == manifest


def test_bad_input_is_rejected(tmp_path):
    from audiocodec.data.song_synth import (Singer, build_song_corpus, make_lyric_lines, plan_song,
                                            plan_song_corpus)
    with pytest.raises(ConfigError, match="unknown scale"):
        build_song_corpus(tmp_path, scale="huge")
    with pytest.raises(ConfigError, match="unknown scale"):
        plan_song_corpus("huge", accents=["en-us"], variants=[])
    with pytest.raises(ConfigError, match="workers"):
        build_song_corpus(tmp_path, scale="toy", workers=0)
    with pytest.raises(ConfigError):
        make_lyric_lines(0)
    singer = Singer("s", "en-us", None, "male", 90, 120, 50)
    with pytest.raises(ConfigError, match="unknown genre"):
        plan_song("x", "train", 0, "polka", singer, ["Hold my hand tonight"], (5.0, 9.0))
    with pytest.raises(ConfigError, match="lyric"):
        plan_song("x", "train", 0, "pop", singer, [], (5.0, 9.0))
    with pytest.raises(ConfigError, match="seconds"):
        plan_song("x", "train", 0, "pop", singer, ["Hold my hand tonight"], (9.0, 5.0))
    from audiocodec.data.song_synth import generate_test_songs, song_token_jobs
    with pytest.raises(ConfigError, match="voice"):
        generate_test_songs(tmp_path / "test.jsonl", tmp_path / "model", tmp_path / "out", voice="bogus")
    with pytest.raises(ConfigError, match="missing"):
        song_token_jobs(tmp_path, tmp_path / "tokens")
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_song_corpus",
                                                  ROOT / "egs" / "mini" / "local" / "make_song_corpus.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    for args in (["--scale", "huge"], ["--workers", "0"]):
        with pytest.raises(SystemExit) as e:
            cli.main([str(tmp_path / "c"), "--no-install", *args])
        assert e.value.code == 2


def test_plans_fit_the_length_limits():
    from audiocodec.data.song_synth import GENRES, MAX_SECONDS, Singer, make_lyric_lines, plan_song
    lines = make_lyric_lines(200, 3)
    singer = Singer("s", "en-us", None, "female", 70, 120, 60)
    for k, genre in enumerate(sorted(GENRES) * 3):
        plan = plan_song(f"s{k}", "train", k, genre, singer, lines, (5.0, MAX_SECONDS))
        seconds = plan.num_samples / SR
        assert 5.0 <= seconds <= MAX_SECONDS and GENRES[genre].bpm[0] <= plan.bpm <= GENRES[genre].bpm[1]
        assert 1 <= len(plan.lines) <= 4 and all(line in lines for line in plan.lines)
        last = plan.notes[-1]
        assert (last.beat + last.beats) * 60 / plan.bpm < seconds
        for n in plan.notes:        # on the key's scale, in the singer's register
            steps = (0, 2, 4, 5, 7, 9, 11) if plan.mode == "major" else (0, 2, 3, 5, 7, 8, 10)
            assert (n.midi - plan.root) % 12 in steps and abs(n.midi - singer.center) <= 7
            assert n.beats * 60 / plan.bpm >= 0.29


def test_mini_song_recipe_runs_end_to_end(corpus, tmp_path):
    from helpers import run_recipe
    data, _ = corpus
    overrides = ['task.model={"dim": 32, "num_layers": 1, "num_heads": 2}', "task.lyrics.num_layers=1",
                 "task.lyrics.num_heads=2", "task.description.num_layers=1", "task.description.num_heads=2",
                 "task.voice.num_layers=1", "task.voice.num_heads=2", "trainer.max_steps=3",
                 "trainer.precision=fp32", "trainer.num_workers=0", "trainer.val_every=3", "trainer.ckpt_every=3",
                 "trainer.log_every=1", "trainer.threads=1", "trainer.progress=false"]
    run_recipe(ROOT / "egs" / "mini" / "song" / "run.sh",
               ["--scale", "toy", "--data", str(data), "--tokens", str(tmp_path / "tokens"),
                "--exp", str(tmp_path / "exp"), "--device", "cpu", "--nj", "2"], overrides)
    for split in ("train", "valid"):
        for sub in ("", "vocal", "accompaniment"):
            assert list((tmp_path / "tokens" / split / sub).glob("shard-*.npz")), (split, sub)
    gen = tmp_path / "exp" / "generate"
    result = json.loads((gen / "metrics.json").read_text())
    test = read_manifest(data / "test.jsonl")
    assert [it["id"] for it in result["items"]] == [r["id"] for r in test]
    for item, ref in zip(result["items"], test):
        for name in ("", ".vocal", ".accompaniment"):      # mini.yaml is a dual-track mode: stems too
            x, sr = sf.read(str(gen / f"{ref['id']}{name}.wav"))
            assert sr == SR and 0 < len(x) <= round(ref["duration"] * SR) + 1
        assert set(item["rms"]) == {"mixture", "vocal", "accompaniment"}
        assert 0 < item["duration"] <= ref["duration"] + 1e-3
        assert math.isfinite(item["mel_distance"]["mixture"]) and item["mel_distance"]["mixture"] >= 0
        timing = item["lyric_timing"]      # the stem check: the generated vocal stem against the note times
        assert timing["track"] == "vocal" and math.isfinite(timing["own"]) and math.isfinite(timing["shuffled"])
        assert timing["reference"] > 10    # the corpus' own vocal is far louder on its notes than between them
    assert set(result["summary"]["rms"]) == {"mixture", "vocal", "accompaniment"}
    assert result["summary"]["lyric_timing"]["songs"] == len(test)
