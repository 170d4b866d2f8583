"""Pack a speech corpus (manifest folder, e.g. `egs/mini/local/make_corpus.py --scale tts`) for a lent GPU
machine, whose calls carry at most 64 MiB each: the transcribed clips of SPLITS resampled to --sample-rate
and written as Ogg Opus, spread over folders of at most --part-mb each (OUT/part00, OUT/part01, ...). Each
part holds its own manifests (`<split>.jsonl`, paths relative to the part, `sample_rate` and `duration`
updated), so any number of parts makes a usable corpus. On the device merge the carried parts with
`mkdir -p data/wavs; for p in part*; do cp -rl $p/wavs/. data/wavs/; done; cat part*/train.jsonl > data/train.jsonl`
(same for valid). A call's 64 MiB count the files' disk blocks: ~30 MB of ~3,000 clips is one call's load.

Opus at --level 0.95 is ~19 kbps at 16 kHz (an ASR teacher and a 16 kHz codec comparison), 0.9 ~32 kbps at
24 kHz (codec training targets).

    python benchmarks/device/pack_speech.py .data/mini_tts .data/carry_asr --sample-rate 16000
"""
from __future__ import annotations

import argparse
import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import soundfile as sf
import torch
import torchaudio
from pack_song_stems import add_pack_options, clear_out, require_files   # a sibling: on sys.path[0]


def encode(job: tuple[str, str, int, float]) -> tuple[int, float]:
    """Resample ``src`` to ``rate`` and write it as Opus at ``dst``: (bytes written, duration in seconds)."""
    src, dst, rate, level = job
    audio, sr = sf.read(src, dtype="float32", always_2d=True)
    wav = torch.from_numpy(audio.mean(axis=1))
    if sr != rate:
        wav = torchaudio.functional.resample(wav, sr, rate)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    sf.write(dst, wav.numpy(), rate, format="OGG", subtype="OPUS", compression_level=level)
    return Path(dst).stat().st_size, wav.numel() / rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path, help="folder with <split>.jsonl manifests (paths relative to it)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--splits", nargs="+", default=["train", "valid"])
    ap.add_argument("--sample-rate", type=int, default=16000, choices=[8000, 12000, 16000, 24000, 48000])
    add_pack_options(ap, level=0.95, part_mb=30.0)   # ~3,000 files: their blocks count too
    args = ap.parse_args()
    require_files(ap, args.corpus, [f"{split}.jsonl" for split in args.splits])
    clear_out(ap, args.out, args.overwrite)   # only once the input is known good
    records = []
    for split in args.splits:
        for line in (args.corpus / f"{split}.jsonl").read_text().splitlines():
            r = json.loads(line)
            if r.get("text"):   # transcribed speech only (the corpus's music clips have none)
                records.append((split, r))
    staging = args.out / "all"
    jobs = [(str(args.corpus / r["path"]), str(staging / "wavs" / f"{r['id']}.opus"), args.sample_rate, args.level)
            for _, r in records]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(encode, jobs, chunksize=16))
    part, used, limit = 0, 0, args.part_mb * 1e6
    manifests: dict[tuple[int, str], list] = {}
    for (split, r), (_, dst, _, _), (size, seconds) in zip(records, jobs, results):
        if used and used + size > limit:
            part, used = part + 1, 0
        used += size
        target = args.out / f"part{part:02d}" / "wavs" / Path(dst).name
        target.parent.mkdir(parents=True, exist_ok=True)
        Path(dst).rename(target)
        manifests.setdefault((part, split), []).append(
            {**r, "path": f"wavs/{target.name}", "sample_rate": args.sample_rate, "duration": round(seconds, 6)})
    for (p, split), rows in manifests.items():
        with open(args.out / f"part{p:02d}" / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    shutil.rmtree(staging)
    total = sum(size for size, _ in results)
    print(f"{len(records)} clips, {total / 1e6:.1f} MB in {part + 1} parts of <= {args.part_mb:g} MB -> {args.out}")


if __name__ == "__main__":
    main()
