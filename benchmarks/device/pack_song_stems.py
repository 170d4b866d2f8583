"""Pack a song corpus (egs/mini/local/make_song_corpus.py) for a lent GPU machine, whose calls carry at most
64 MiB each: the vocal and accompaniment stems of SPLITS as Ogg Opus (the mixture is rebuilt there as their
sum by song_pipeline.sh), split over folders of at most --part-mb each. The first folder also holds the
manifests, their stem paths pointing at the .opus files. On the device, merge the parts into one folder
(`cp -rl part*/. songs/`) and pass it to `song_pipeline.sh` (CODEC=<codec file> encodes it with that codec).

Opus at --level 0.9 is ~32 kbps for an accompaniment and ~24 kbps for a vocal (24 kHz mono): mel distance to
the original ~0.2 (the small music codec's own: ~1.2).

    python benchmarks/device/pack_song_stems.py .data/songs_large .data/carry_songs --splits train valid
"""
from __future__ import annotations

import argparse
import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import soundfile as sf

STEMS = ("vocal", "accompaniment")


def encode(job: tuple[str, str, float]) -> int:
    src, dst, level = job
    audio, sr = sf.read(src, dtype="float32")
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    sf.write(dst, audio, sr, format="OGG", subtype="OPUS", compression_level=level)
    return Path(dst).stat().st_size


def add_pack_options(ap: argparse.ArgumentParser, level: float, part_mb: float = 60.0) -> None:
    """The options every packer of this folder takes: --level, --part-mb, --jobs, --overwrite."""
    ap.add_argument("--level", type=float, default=level, help="libsndfile compression level (0 best .. 1 smallest)")
    ap.add_argument("--part-mb", type=float, default=part_mb,
                    help="size of a part (a device call carries 64 MiB, counted in file blocks)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--overwrite", action="store_true", help="replace OUT when it exists")


def require_files(ap: argparse.ArgumentParser, folder: Path, names) -> None:
    """Exit with a clear error unless every one of ``names`` is a file in ``folder`` (before anything is written)."""
    missing = [str(folder / name) for name in names if not (folder / name).is_file()]
    if missing:
        ap.error(f"missing input: {', '.join(missing)}")


def clear_out(ap: argparse.ArgumentParser, out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite`` (then empty it)."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            ap.error(f"{out} exists and is not empty (--overwrite replaces it)")
        shutil.rmtree(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("songs", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--splits", nargs="+", default=["train", "valid"])
    add_pack_options(ap, level=0.9)
    args = ap.parse_args()
    require_files(ap, args.songs, [f"{split}.jsonl" if stem == "mixture" else f"{split}.{stem}.jsonl"
                                   for split in args.splits for stem in ("mixture",) + STEMS])
    clear_out(ap, args.out, args.overwrite)
    staging = args.out / "all"
    jobs, manifests = [], {}
    for split in args.splits:
        for stem in ("mixture",) + STEMS:
            name = f"{split}.jsonl" if stem == "mixture" else f"{split}.{stem}.jsonl"
            rows = [json.loads(line) for line in open(args.songs / name)]
            for r in rows:
                if stem != "mixture":
                    rel = str(Path(r["path"]).with_suffix(".opus"))
                    jobs.append((str(args.songs / r["path"]), str(staging / rel), args.level))
                    r["path"] = rel
            manifests[name] = rows
    with ProcessPoolExecutor(args.jobs) as pool:
        sizes = list(pool.map(encode, jobs, chunksize=16))
    # whole songs per part, in order, each part under the byte budget
    per_song: dict[str, int] = {}
    for (_, dst, _), size in zip(jobs, sizes):
        song = Path(dst).parent.name
        per_song[song] = per_song.get(song, 0) + size
    budget, part, used = args.part_mb * 1e6, 0, 0.0
    for song, size in per_song.items():
        if used + size > budget and used > 0:
            part, used = part + 1, 0.0
        used += size
        target = args.out / f"part{part}" / "songs" / song
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging / "songs" / song), str(target))
    shutil.rmtree(staging)
    for name, rows in manifests.items():
        with open(args.out / "part0" / name, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    print(f"{len(per_song)} songs, {sum(sizes) / 1e6:.1f} MB in {part + 1} part(s) under {args.out}")


if __name__ == "__main__":
    main()
