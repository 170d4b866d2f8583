"""VCTK: version 0.92 (``VCTK-Corpus-0.92/wav48_silence_trimmed/pXXX/pXXX_YYY_mic{1,2}.flac``) and the older
0.80 layout (``VCTK-Corpus/wav48/pXXX/pXXX_YYY.wav``), both with ``txt/pXXX/pXXX_YYY.txt`` transcripts and a
``speaker-info.txt`` table (``ID AGE GENDER ACCENTS REGION``; IDs are ``p225`` in 0.92 and ``225`` in 0.80)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

from ...audio import PathLike
from .common import Collector, PrepareError, check_root, find_child, read_text

NAME = "vctk"
AUDIO_DIRS = ("wav48_silence_trimmed", "wav48")
MICS = ("mic1", "mic2", "both")
_FILE = re.compile(r"(?P<utt>[a-z]+\d+_\d+)(?:_(?P<mic>mic\d))?")


def read_speaker_info(path: Path) -> dict[str, dict]:
    """``{"p225": {"age": "23", "gender": "F", "accent": "English", "region": "Southern England"}}``."""
    out = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[0].upper() == "ID":
            continue
        spk = parts[0] if not parts[0].isdigit() else f"p{parts[0]}"
        out[spk] = {"age": parts[1], "gender": parts[2],
                    "accent": parts[3] if len(parts) > 3 else None,
                    "region": " ".join(parts[4:]) or None}
    return out


def prepare(root: PathLike, out_manifest: PathLike, subsets: Optional[Sequence[str]] = None,
            workers: int = 1, mic: str = "mic1", require_text: bool = False) -> dict:
    """Manifest of VCTK at ``root`` (the corpus folder or its parent).

    Args:
        subsets: speaker ids to keep (e.g. ``["p225", "p226"]``); all when ``None``.
        mic: for 0.92, ``"mic1"``, ``"mic2"`` or ``"both"`` (ids then end in ``_mic1``/``_mic2``).

    Each record: ``id``, ``text``, ``speaker``, ``language``, and ``gender``/``age``/``accent``/``region``
    from speaker-info.txt when present. Utterances without transcript (e.g. all of p315) are kept and
    counted in ``notes`` unless ``require_text``.
    """
    if mic not in MICS:
        raise PrepareError(f"{NAME}: mic must be one of {MICS}, got {mic!r}")
    root = find_child(check_root(root, NAME), ["VCTK-Corpus-0.92", "VCTK-Corpus", "VCTK"],
                      lambda p: any((p / d).is_dir() for d in AUDIO_DIRS))
    audio_dir = next((root / d for d in AUDIO_DIRS if (root / d).is_dir()), None)
    if audio_dir is None:
        raise PrepareError(f"{NAME}: no {' or '.join(AUDIO_DIRS)} folder in {root}: is it the VCTK corpus?")
    info = read_speaker_info(root / "speaker-info.txt")
    speakers = sorted(p.name for p in audio_dir.iterdir() if p.is_dir())
    if subsets is not None:
        missing = [s for s in subsets if s not in speakers]
        if missing:
            raise PrepareError(f"{NAME}: speaker(s) {', '.join(missing)} not found in {audio_dir}")
        speakers = list(subsets)
    col = Collector(NAME, workers)
    items = []
    for spk in speakers:
        files = sorted(p for p in (audio_dir / spk).iterdir() if p.suffix.lower() in (".flac", ".wav"))
        for f in files:
            m = _FILE.fullmatch(f.stem)
            if m is None:
                col.skip("unexpected_name", f"not a VCTK utterance file name: {f}")
                continue
            utt, file_mic = m.group("utt"), m.group("mic")
            if file_mic is not None and mic != "both" and file_mic != mic:
                continue
            uid = f.stem if (file_mic is not None and mic == "both") else utt
            text = read_text(root / "txt" / spk / f"{utt}.txt")
            if text is None:
                if require_text:
                    col.skip("missing_text", f"no transcript for {f}")
                    continue
                col.note("missing_text")
            meta = {"id": uid, "text": text, "speaker": spk, "language": "en"}
            if file_mic is not None:
                meta["mic"] = file_mic
            meta.update({k: v for k, v in info.get(spk, {}).items() if v is not None})
            items.append((f, meta))
    col.add_all(items)
    return col.finish(out_manifest)
