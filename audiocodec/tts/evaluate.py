"""``audiocodec eval-tts``: synthesise the sentences of a test manifest and score them against its audio.

Each record's ``text`` is spoken by the model; with ``clone=True`` (the default when records carry a
``speaker``) the voice is cloned from another clip of the same speaker with its transcript, so held-out
voices can be scored. The record's own audio is the reference (on the mini corpus: espeak-ng's rendering of
the same sentence in the same voice). Scores per item and their means:

* ``mcd``: mel-cepstral distortion after DTW alignment (:func:`~audiocodec.metrics.tts.mel_cepstral_distortion`);
* ``duration_ratio``: synthesis / reference speech duration;
* ``wer`` / ``cer``: with a local ASR model (any ``transformers`` speech-recognition checkpoint folder),
  word and character error rates of its transcripts of the synthesis (``jiwer``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np

from ..audio import load_audio, save_audio
from ..data.manifest import read_manifest
from ..metrics.tts import duration_ratio, mel_cepstral_distortion


def _asr(model_path: str, device: str):
    try:
        from transformers import pipeline
    except ImportError as e:
        raise ImportError("WER/CER need the 'transformers' package (pip install transformers jiwer)") from e
    return pipeline("automatic-speech-recognition", model=model_path, device=device)


def _normalize_words(text: str) -> str:
    return " ".join("".join(c.lower() if c.isalnum() or c == "'" else " " for c in text).split())


def evaluate_tts(tts, manifest, out_dir: Optional[str] = None, clone: Optional[bool] = None,
                 asr_model: Optional[str] = None, limit: Optional[int] = None, **options) -> dict:
    """Score ``tts`` (:class:`~audiocodec.tts.TTS`) on ``manifest``; returns ``{"summary", "items"}``."""
    records = [r for r in read_manifest(manifest) if r.get("text")]
    if limit:
        records = records[:limit]
    if not records:
        raise ValueError(f"{manifest}: no record with a 'text'")
    clone = all(r.get("speaker") is not None for r in records) if clone is None else clone
    by_speaker: dict = {}
    for r in read_manifest(manifest):
        if r.get("text"):
            by_speaker.setdefault(r.get("speaker"), []).append(r)
    asr = _asr(asr_model, "cpu") if asr_model else None
    options.setdefault("greedy", False)
    options.setdefault("seed", 0)
    items = []
    for rec in records:
        voice = voice_text = None
        if clone:
            others = [o for o in by_speaker.get(rec.get("speaker"), []) if o["path"] != rec["path"]]
            if others:
                voice, voice_text = others[0]["path"], others[0]["text"]
        audio = tts.synthesize(rec["text"], voice=voice, voice_text=voice_text, **options)
        ref, _ = load_audio(rec["path"], sample_rate=tts.sample_rate, channels=1)
        hyp = audio.numpy()
        item = {"id": rec.get("id") or Path(rec["path"]).stem, "text": rec["text"],
                "voice": voice, "seconds": len(hyp) / tts.sample_rate,
                "mcd": mel_cepstral_distortion(ref[0], hyp, tts.sample_rate),
                "duration_ratio": duration_ratio(ref[0], hyp, tts.sample_rate)}
        if asr is not None:
            import jiwer
            heard = asr({"raw": hyp.astype(np.float32), "sampling_rate": tts.sample_rate})["text"]
            truth, said = _normalize_words(rec["text"]), _normalize_words(heard)
            item.update(transcript=heard, wer=float(jiwer.wer(truth, said or "<empty>")),
                        cer=float(jiwer.cer(truth, said or "<empty>")))
        if out_dir:
            save_audio(Path(out_dir) / f"{item['id']}.wav", audio[None], tts.sample_rate)
        items.append(item)
    summary = {}
    for key in ("mcd", "duration_ratio", "wer", "cer"):
        values = [i[key] for i in items if key in i and math.isfinite(i[key])]
        if values:
            summary[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}
    result = {"summary": summary, "items": items, "clone": clone}
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "metrics.json").write_text(json.dumps(result, indent=1))
    return result
