"""benchmarks/device/pack_speech.py: a speech corpus as Opus parts, each a usable corpus with its own manifests."""
import json
import subprocess
import sys
from pathlib import Path

import soundfile as sf

from helpers import synth_audio

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device" / "pack_speech.py"


def _corpus(root: Path) -> Path:
    (root / "wavs").mkdir(parents=True)
    rows = {"train": [], "valid": []}
    for i in range(5):
        split = "valid" if i == 4 else "train"
        path = f"wavs/c{i}.wav"
        sf.write(root / path, synth_audio(1.0 + 0.5 * i, seed=i)[0, 0].numpy(), 24000)
        text = None if i == 2 else f"clip {i}"   # clip 2: music, no transcript
        rows[split].append({"id": f"c{i}", "path": path, "text": text, "duration": 1.0 + 0.5 * i,
                            "sample_rate": 24000})
    for split, records in rows.items():
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def _pack(src: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(src), str(out), "--sample-rate", "16000", *extra],
                          capture_output=True, text=True, timeout=120)


def test_pack_speech_parts_are_corpora(tmp_path):
    src, out = _corpus(tmp_path / "corpus"), tmp_path / "out"
    done = _pack(src, out, "--part-mb", "0.004", "--jobs", "1")   # ~4 kB: one or two clips a part
    assert done.returncode == 0, done.stderr
    parts = sorted(out.glob("part*"))
    assert len(parts) > 1 and not (out / "all").exists()
    seen = {}
    for part in parts:
        for manifest in part.glob("*.jsonl"):
            for line in manifest.read_text().splitlines():
                r = json.loads(line)
                audio, sr = sf.read(part / r["path"])
                assert sr == r["sample_rate"] == 16000 and r["path"].endswith(".opus")
                assert abs(len(audio) / sr - r["duration"]) < 0.03
                seen[r["id"]] = manifest.stem
    assert seen == {"c0": "train", "c1": "train", "c3": "train", "c4": "valid"}   # the untranscribed clip is left out
    again = _pack(src, out)
    assert again.returncode != 0 and "not empty" in again.stderr   # nothing overwritten without --overwrite
    assert _pack(src, out, "--overwrite").returncode == 0
    kept = sorted(out.rglob("*"))
    wrong = _pack(src, out, "--overwrite", "--splits", "train", "test")
    assert wrong.returncode != 0 and "test.jsonl" in wrong.stderr
    assert sorted(out.rglob("*")) == kept   # refused before the earlier output was cleared
