"""Training data: manifests, corpus preparers on fake trees in the official layouts, crop datasets, loaders."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiocodec.data import (AudioCropDataset, ManifestError, filter_by_duration, make_dataloader, read_manifest,
                             split_records, write_manifest, write_splits)
from audiocodec.data.prepare import PrepareError, main_prepare, prepare


def tone(path, seconds=0.5, sr=24000, channels=1, freq=440.0, amp=0.3, subtype=None, seed=0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * sr))) / sr
    rng = np.random.default_rng(seed)
    x = amp * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    data = np.stack([x * (1 + 0.5 * c) for c in range(channels)], 1) if channels > 1 else x
    sf.write(str(path), data.astype(np.float32), sr, subtype=subtype)
    return path


def garbage(path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not audio at all" * 10)
    return path


def by_id(records):
    return {r["id"]: r for r in records}


# -- manifests ---------------------------------------------------------------------------------------------

def test_manifest_round_trip_relative_paths(tmp_path):
    a = tone(tmp_path / "data" / "wavs" / "a.wav", 0.5)
    outside = tone(tmp_path / "elsewhere" / "b.flac", 0.25, sr=16000)
    recs = [{"id": "a", "path": str(a), "duration": 0.5, "sample_rate": 24000, "text": "hello", "speaker": 7,
             "extra": {"x": [1, 2]}},
            {"id": "b", "path": str(outside), "duration": 0.25, "sample_rate": 16000}]
    m = write_manifest(tmp_path / "data" / "m.jsonl", recs)
    lines = [json.loads(x) for x in m.read_text().splitlines()]
    assert lines[0]["path"] == "wavs/a.wav"                 # relative under the manifest's folder
    assert lines[1]["path"] == str(outside)                 # absolute elsewhere
    back = read_manifest(m)
    assert back[0]["path"] == str(a) and back[0]["speaker"] == "7" and back[0]["extra"] == {"x": [1, 2]}
    assert back[0]["text"] == "hello" and back[1]["sample_rate"] == 16000
    assert not list((tmp_path / "data").glob(".*tmp*"))    # atomic write leaves no temp file
    raw = read_manifest(m, resolve_paths=False)
    assert raw[0]["path"] == "wavs/a.wav"


@pytest.mark.parametrize("line, words", [
    ('{"path": "a.wav", "duration": 1.0}', "sample_rate"),
    ('{"path": "a.wav", "sample_rate": 24000}', "duration"),
    ('{"duration": 1.0, "sample_rate": 24000}', "'path'"),
    ('{"path": "a.wav", "duration": -1, "sample_rate": 24000}', "duration"),
    ('{"path": "a.wav", "duration": 1, "sample_rate": 5}', "sample_rate"),
    ('{"path": "a.wav", "duration": 1, "sample_rate": 24000, "text": 3}', "'text'"),
    ('[1, 2]', "JSON object"),
    ('{"path": "a.wav", "duration": 1, ', "not valid JSON"),
])
def test_manifest_validation_names_the_line(tmp_path, line, words):
    good = '{"path": "g.wav", "duration": 1.0, "sample_rate": 24000}'
    m = tmp_path / "bad.jsonl"
    m.write_text(good + "\n\n" + line + "\n")
    with pytest.raises(ManifestError, match="line 3") as e:
        read_manifest(m)
    assert words in str(e.value)


def test_manifest_duplicate_ids_and_missing_file(tmp_path):
    m = tmp_path / "dup.jsonl"
    rec = {"id": "x", "path": "a.wav", "duration": 1.0, "sample_rate": 24000}
    m.write_text(json.dumps(rec) + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(ManifestError, match="duplicate id 'x'.*line 1"):
        read_manifest(m)
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(ManifestError, match="entry 1"):
        write_manifest(tmp_path / "w.jsonl", [{"path": "a.wav"}])


def _records(n_speakers=6, per=5):
    return [{"id": f"s{s}_{u}", "path": f"{s}_{u}.wav", "duration": 1.0 + u, "sample_rate": 24000,
             "speaker": f"s{s}"} for s in range(n_speakers) for u in range(per)]


def test_filter_and_split(tmp_path):
    recs = _records()
    assert len(filter_by_duration(recs, min_duration=2.0, max_duration=4.0)) == 6 * 3
    with pytest.raises(ManifestError):
        filter_by_duration(recs, 3, 2)
    sp = split_records(recs, valid=0.2, test=0.2, by="speaker", seed=1)
    spk = {k: {r["speaker"] for r in v} for k, v in sp.items()}
    assert spk["train"] and spk["valid"] and spk["test"]
    assert not (spk["train"] & spk["valid"]) and not (spk["train"] & spk["test"]) and not (spk["valid"] & spk["test"])
    assert sum(len(v) for v in sp.values()) == len(recs)
    assert sp == split_records(recs, valid=0.2, test=0.2, by="speaker", seed=1)           # same seed, same split
    assert split_records(recs, valid=1, test=2, by="speaker", seed=0)["test"] \
        and len({r["speaker"] for r in split_records(recs, valid=1, test=2, by="speaker")["test"]}) == 2
    su = split_records(recs, valid=3, test=0.1, by="utterance", seed=0)
    assert len(su["valid"]) == 3 and len(su["test"]) == 3 and len(su["train"]) == 24
    assert su != split_records(recs, valid=3, test=0.1, by="utterance", seed=5)
    with pytest.raises(ManifestError, match="speaker"):
        split_records([{k: v for k, v in r.items() if k != "speaker"} for r in recs], by="speaker")
    paths = write_splits(sp, tmp_path)
    assert len(read_manifest(paths["train"], validate=True)) == len(sp["train"])


# -- preparers --------------------------------------------------------------------------------------------

def test_ljspeech(tmp_path):
    root = tmp_path / "LJSpeech-1.1"
    tone(root / "wavs" / "LJ001-0001.wav", 0.5, sr=22050)
    tone(root / "wavs" / "LJ001-0002.wav", 0.25, sr=22050)
    garbage(root / "wavs" / "LJ001-0003.wav")
    (root / "metadata.csv").write_text(
        'LJ001-0001|Printing, in the "only" sense, 1st.|Printing, in the "only" sense, first.\n'
        "LJ001-0002|in being comparatively modern.|in being comparatively modern.\n"
        "LJ001-0003|corrupt one|corrupt one\n"
        "LJ001-0004|its wav is missing|its wav is missing\n", encoding="utf-8")
    stats = prepare("ljspeech", tmp_path, tmp_path / "lj.jsonl")      # the parent folder works too
    assert stats["written"] == 2 and stats["skipped"] == 2
    assert stats["skipped_by_reason"] == {"unreadable": 1, "missing": 1}
    recs = by_id(read_manifest(tmp_path / "lj.jsonl"))
    assert set(recs) == {"LJ001-0001", "LJ001-0002"}
    r = recs["LJ001-0001"]
    assert r["text"] == 'Printing, in the "only" sense, first.' and r["text_original"].endswith("1st.")
    assert r["speaker"] == "LJ" and r["sample_rate"] == 22050 and r["duration"] == pytest.approx(0.5, abs=1e-4)
    assert Path(r["path"]).is_file()
    with pytest.raises(PrepareError, match="metadata.csv"):
        prepare("ljspeech", root / "wavs", tmp_path / "x.jsonl")


def test_libritts(tmp_path):
    root = tmp_path / "LibriTTS_R"
    d = root / "dev-clean" / "84" / "121123"
    tone(d / "84_121123_000007_000001.wav", 0.5)
    (d / "84_121123_000007_000001.normalized.txt").write_text("Go, do you hear?")
    (d / "84_121123_000007_000001.original.txt").write_text("Go, do you hear?")
    tone(d / "84_121123_000008_000000.wav", 0.25)                      # text only in trans.tsv
    (d / "84_121123.trans.tsv").write_text("84_121123_000008_000000\tMr. Smith came.\tMister Smith came.\n")
    garbage(d / "84_121123_000009_000000.wav")
    t = root / "train-clean-100" / "19" / "198"
    tone(t / "19_198_000000_000000.wav", 0.75)
    (t / "19_198_000000_000000.normalized.txt").write_text("Hello there.")
    stats = prepare("libritts", tmp_path, tmp_path / "all.jsonl")
    assert stats["written"] == 3 and stats["skipped_by_reason"] == {"unreadable": 1}
    recs = by_id(read_manifest(tmp_path / "all.jsonl"))
    r = recs["84_121123_000008_000000"]
    assert r["text"] == "Mister Smith came." and r["text_original"] == "Mr. Smith came."
    assert r["speaker"] == "84" and r["chapter"] == "121123" and r["subset"] == "dev-clean"
    assert recs["19_198_000000_000000"]["duration"] == pytest.approx(0.75, abs=1e-4)
    stats = prepare("libritts_r", root, tmp_path / "dev.jsonl", subsets=["dev-clean"])
    assert {r["subset"] for r in read_manifest(tmp_path / "dev.jsonl")} == {"dev-clean"} and stats["written"] == 2
    with pytest.raises(PrepareError, match="train-other-500"):
        prepare("libritts", root, tmp_path / "x.jsonl", subsets=["train-other-500"])


def test_vctk_092_and_old_layout(tmp_path):
    root = tmp_path / "VCTK-Corpus-0.92"
    w = root / "wav48_silence_trimmed"
    for mic in ("mic1", "mic2"):
        tone(w / "p225" / f"p225_001_{mic}.flac", 0.5, sr=48000)
        tone(w / "p315" / f"p315_002_{mic}.flac", 0.25, sr=48000)
    garbage(w / "p225" / "p225_002_mic1.flac")
    (root / "txt" / "p225").mkdir(parents=True)
    (root / "txt" / "p225" / "p225_001.txt").write_text("Please call Stella.\n")
    (root / "txt" / "p225" / "p225_002.txt").write_text("Ask her to bring these things.\n")
    (root / "speaker-info.txt").write_text("ID  AGE  GENDER  ACCENTS  REGION COMMENTS \n"
                                           "p225  23  F    English    Southern  England\n")
    stats = prepare("vctk", tmp_path, tmp_path / "v.jsonl")
    assert stats["written"] == 2 and stats["skipped_by_reason"] == {"unreadable": 1}
    assert stats["notes"] == {"missing_text": 1}
    recs = by_id(read_manifest(tmp_path / "v.jsonl"))
    assert set(recs) == {"p225_001", "p315_002"}
    r = recs["p225_001"]
    assert r["text"] == "Please call Stella." and r["speaker"] == "p225" and r["mic"] == "mic1"
    assert r["gender"] == "F" and r["accent"] == "English" and r["sample_rate"] == 48000
    assert "text" not in recs["p315_002"]
    both = prepare("vctk", root, tmp_path / "b.jsonl", mic="both", subsets=["p225"])
    assert {r["id"] for r in read_manifest(tmp_path / "b.jsonl")} == {"p225_001_mic1", "p225_001_mic2"}
    assert both["written"] == 2
    old = tmp_path / "old" / "VCTK-Corpus"
    tone(old / "wav48" / "p226" / "p226_003.wav", 0.5, sr=48000)
    (old / "txt" / "p226").mkdir(parents=True)
    (old / "txt" / "p226" / "p226_003.txt").write_text("Six spoons of fresh snow peas.")
    (old / "speaker-info.txt").write_text("ID  AGE  GENDER  ACCENTS  REGION\n226  22  M    English    Surrey\n")
    prepare("vctk", tmp_path / "old", tmp_path / "o.jsonl")
    (r,) = read_manifest(tmp_path / "o.jsonl")
    assert r["id"] == "p226_003" and r["text"].startswith("Six spoons") and r["gender"] == "M"


def test_librispeech(tmp_path):
    d = tmp_path / "LibriSpeech" / "dev-clean" / "1272" / "128104"
    tone(d / "1272-128104-0000.flac", 0.5, sr=16000)
    tone(d / "1272-128104-0001.flac", 0.25, sr=16000)
    (d / "1272-128104-0002.flac").write_bytes(b"")
    (d / "1272-128104.trans.txt").write_text("1272-128104-0000 MISTER QUILTER IS THE APOSTLE\n"
                                             "1272-128104-0001 NOR IS MISTER QUILTER'S MANNER\n"
                                             "1272-128104-0002 EMPTY FILE\n")
    stats = prepare("librispeech", tmp_path / "LibriSpeech", tmp_path / "ls.jsonl", subsets=["dev-clean"])
    assert stats["written"] == 2 and stats["skipped_by_reason"] == {"empty": 1}
    recs = by_id(read_manifest(tmp_path / "ls.jsonl"))
    r = recs["1272-128104-0001"]
    assert r["text"] == "NOR IS MISTER QUILTER'S MANNER" and r["speaker"] == "1272" and r["chapter"] == "128104"
    assert r["duration"] == pytest.approx(0.25, abs=1e-4) and r["sample_rate"] == 16000


def test_folder_and_cli(tmp_path, capsys):
    root = tmp_path / "audio"
    tone(root / "a.wav", 0.5)
    (root / "a.txt").write_text("first clip\n")
    tone(root / "spkA" / "b.flac", 0.25, sr=44100, channels=2)
    (root / "spkA" / "b.lab").write_text("second clip")
    garbage(root / "spkA" / "c.wav")
    (root / "notes.md").write_text("not audio")
    stats = prepare("folder", root, tmp_path / "f.jsonl")
    assert stats["written"] == 2 and stats["skipped_by_reason"] == {"unreadable": 1}
    recs = by_id(read_manifest(tmp_path / "f.jsonl"))
    assert recs["a"]["text"] == "first clip" and "speaker" not in recs["a"]
    assert recs["spkA__b"]["speaker"] == "spkA" and recs["spkA__b"]["channels"] == 2
    assert recs["spkA__b"]["text"] == "second clip"
    rc = main_prepare(["folder", str(root), str(tmp_path / "cli.jsonl"), "--split", "utterance", "--valid", "1",
                       "--test", "0", "-q"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["written"] == 2 and out["skipped_by_reason"] == {"unreadable": 1}
    assert len(read_manifest(tmp_path / "cli.valid.jsonl")) == 1
    assert main_prepare(["folder", str(tmp_path / "nowhere"), str(tmp_path / "x.jsonl"), "-q"]) == 2
    assert main_prepare(["folder", str(root), str(tmp_path / "y.jsonl"), "-q", "--strict"]) == 1


# -- dataset ----------------------------------------------------------------------------------------------

def _manifest(tmp_path, specs, name="m.jsonl"):
    """specs: (id, seconds, sr, channels, freq) -> a manifest of those tones."""
    recs = []
    for i, (rid, sec, sr, ch, freq) in enumerate(specs):
        p = tone(tmp_path / "wavs" / f"{rid}.wav", sec, sr=sr, channels=ch, freq=freq, seed=i)
        recs.append({"id": rid, "path": str(p), "duration": sec, "sample_rate": sr})
    return write_manifest(tmp_path / name, recs)


def test_crops_shape_determinism_and_gain(tmp_path):
    m = _manifest(tmp_path, [("a", 2.0, 24000, 1, 300), ("b", 1.5, 24000, 1, 500), ("short", 0.3, 24000, 1, 700)])
    ds = AudioCropDataset(m, sample_rate=24000, crop_seconds=0.5, seed=3)
    plain = AudioCropDataset(m, sample_rate=24000, crop_seconds=0.5, seed=3, gain_db=None)
    gained = AudioCropDataset(m, sample_rate=24000, crop_seconds=0.5, seed=3, gain_db=(-12.0, -3.0))
    for i in range(3):
        it = ds[i]
        assert it["audio"].shape == (1, 12000) and it["audio"].dtype == torch.float32
        again = ds[(i, 0)]
        assert torch.equal(it["audio"], again["audio"]) and it["offset"] == again["offset"]
        g = gained[i]
        assert -12.0 <= g["gain_db"] <= -3.0
        torch.testing.assert_close(g["audio"], plain[i]["audio"] * 10 ** (g["gain_db"] / 20))
    short = ds[2]
    assert short["length"] == 7200 and short["audio"][:, 7200:].abs().max() == 0
    assert short["audio"][:, :7200].abs().max() > 0
    offsets = {ds[(0, e)]["offset"] for e in range(6)}
    assert len(offsets) > 1                                       # a new crop each epoch
    other = AudioCropDataset(m, sample_rate=24000, crop_seconds=0.5, seed=4)
    assert any(other[(0, e)]["offset"] != ds[(0, e)]["offset"] for e in range(4))
    fixed = AudioCropDataset(m, sample_rate=24000, crop_seconds=0.5, random_crop=False)
    assert fixed[0]["offset"] == 0 and fixed[(0, 5)]["offset"] == 0
    nopad = AudioCropDataset(m, sample_rate=24000, crop_seconds=0.5, pad=False)
    assert nopad[2] is None and nopad.skipped == Counter({"too_short": 1})
    whole = AudioCropDataset(m, sample_rate=24000, crop_seconds=None)
    assert whole[0]["audio"].shape == (1, 48000)


def _peak_hz(x: torch.Tensor, sr: int) -> float:
    spec = torch.fft.rfft(x[0] * torch.hann_window(x.shape[-1]))
    return float(spec.abs().argmax()) * sr / x.shape[-1]


def test_resampling_and_stereo(tmp_path):
    m = _manifest(tmp_path, [("r16", 1.0, 16000, 1, 1000), ("r44", 1.0, 44100, 1, 3000),
                             ("st", 1.0, 24000, 2, 2000)])
    ds = AudioCropDataset(m, sample_rate=24000, crop_seconds=0.5, seed=0)
    a, b, c = ds[0], ds[1], ds[2]
    for it in (a, b, c):
        assert it["audio"].shape == (1, 12000) and it["length"] == 12000
    assert _peak_hz(a["audio"], 24000) == pytest.approx(1000, abs=10)
    assert _peak_hz(b["audio"], 24000) == pytest.approx(3000, abs=10)
    # stereo: channel 1 is 1.5x channel 0, so the mono mix is 1.25x channel 0
    data, _ = sf.read(str(tmp_path / "wavs" / "st.wav"), dtype="float32")
    start = int(round(c["offset"] * 24000))
    expect = torch.from_numpy(data[start:start + 12000].mean(1))
    torch.testing.assert_close(c["audio"][0], expect)
    two = AudioCropDataset(m, sample_rate=24000, crop_seconds=0.5, channels=2)
    assert two[0]["audio"].shape == (2, 12000) and torch.equal(two[0]["audio"][0], two[0]["audio"][1])


def _bad_manifest(tmp_path):
    w = tmp_path / "wavs"
    recs = []

    def add(rid, path, duration=1.0, sr=24000):
        recs.append({"id": rid, "path": str(path), "duration": duration, "sample_rate": sr})

    for i in range(4):
        add(f"good{i}", tone(w / f"good{i}.wav", 1.0, seed=i))
    full = tone(w / "trunc.wav", 1.0).read_bytes()
    (w / "trunc.wav").write_bytes(full[: len(full) // 3])
    add("truncated", w / "trunc.wav")
    add("corrupt", garbage(w / "corrupt.wav"))
    (w / "empty.wav").write_bytes(b"")
    add("empty", w / "empty.wav")
    x = np.full(24000, np.nan, dtype=np.float32)
    sf.write(str(w / "nan.wav"), x, 24000, subtype="FLOAT")
    add("nan", w / "nan.wav")
    add("rate", tone(w / "rate.wav", 1.0, sr=16000))             # the manifest says 24 kHz
    add("missing", w / "missing.wav")
    sf.write(str(w / "silent.wav"), np.zeros(24000, dtype=np.float32), 24000)
    add("silent", w / "silent.wav")
    add("three", tone(w / "three.wav", 1.0, channels=3))
    return write_manifest(tmp_path / "bad.jsonl", recs)


EXPECTED_BAD = {"truncated": 1, "corrupt": 1, "empty": 1, "nan": 1, "rate_mismatch": 1, "missing": 1,
                "silent": 1, "channels": 1}


def test_bad_files_are_skipped_and_counted(tmp_path):
    m = _bad_manifest(tmp_path)
    ds = AudioCropDataset(m, sample_rate=24000, crop_seconds=0.5, channels=2, reject_silence=True)
    items = [ds[i] for i in range(len(ds))]
    good = [it["id"] for it in items if it is not None]
    assert good == ["good0", "good1", "good2", "good3"]
    assert dict(ds.skipped) == EXPECTED_BAD
    [ds[i] for i in range(len(ds))]                      # counted again next epoch, never raises
    assert sum(ds.skipped.values()) == 2 * sum(EXPECTED_BAD.values())
    mono = AudioCropDataset(m, sample_rate=24000, crop_seconds=0.5)   # 3 channels mix down; silence kept
    assert sum(mono[i] is not None for i in range(len(mono))) == 6


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_counts_skips_across_workers(tmp_path, workers):
    m = _bad_manifest(tmp_path)
    ds = AudioCropDataset(m, sample_rate=24000, crop_seconds=0.25, channels=2, reject_silence=True, seed=1)
    loader = make_dataloader(ds, batch_size=3, num_workers=workers, seed=0)
    ids = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        epoch_ids = []
        for batch in loader:
            assert batch["audio"].shape[1:] == (2, 6000) and batch["audio"].shape[0] == len(batch["id"]) > 0
            assert "skipped" not in batch and torch.isfinite(batch["audio"]).all()
            epoch_ids += batch["id"]
        assert sorted(epoch_ids) == ["good0", "good1", "good2", "good3"]
        ids.append(epoch_ids)
    assert dict(loader.skipped) == {k: 2 * v for k, v in EXPECTED_BAD.items()}
    assert "16 item(s) skipped" in loader.skip_report()


def test_loader_deterministic_and_resumable(tmp_path):
    m = _manifest(tmp_path, [(f"c{i}", 1.0, 24000, 1, 200 + 50 * i) for i in range(8)])

    def run(workers, epoch, start=0):
        ds = AudioCropDataset(m, sample_rate=24000, crop_seconds=0.2, gain_db=(-6, 0), seed=7)
        loader = make_dataloader(ds, batch_size=2, num_workers=workers, seed=11, shuffle=True)
        loader.set_epoch(epoch, start=start)
        return [(b["id"], b["audio"]) for b in loader]

    a, b = run(0, 2), run(2, 2)
    assert [x[0] for x in a] == [x[0] for x in b]
    assert all(torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert [x[0] for x in run(0, 3)] != [x[0] for x in a]
    resumed = run(0, 2, start=4)                         # 4 samples (2 batches) already consumed
    assert [x[0] for x in resumed] == [x[0] for x in a[2:]]
    assert all(torch.equal(x[1], y[1]) for x, y in zip(resumed, a[2:]))


def test_distributed_shards(tmp_path):
    m = _manifest(tmp_path, [(f"c{i}", 0.5, 24000, 1, 300) for i in range(7)])
    ds = AudioCropDataset(m, sample_rate=24000, crop_seconds=0.1)
    seen = []
    for rank in range(2):
        loader = make_dataloader(ds, batch_size=2, distributed=True, num_replicas=2, rank=rank, seed=0)
        loader.set_epoch(1)
        seen.append([i for b in loader for i in b["id"]])
    assert len(seen[0]) == len(seen[1]) == 4                      # padded to divide evenly, like DistributedSampler
    assert set(seen[0]) | set(seen[1]) == {f"c{i}" for i in range(7)}
