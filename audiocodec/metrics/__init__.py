"""Codec evaluation: signal metrics, codebook statistics, optional model-based scores, and evaluation of
folders or manifests (``audiocodec eval``).

>>> from audiocodec.metrics import evaluate_dirs
>>> result = evaluate_dirs("data/ref", "data/reconstructed")
>>> print(result.table()); result.to_json("eval.json")
"""
from .codebook import CodebookStats, bitrate_on_set, codec_bitrate
from .evaluate import EvalResult, evaluate_dirs, evaluate_manifest, pair_files, read_manifest, summarize
from .model_based import ModelScorer, load_model_scorer
from .signal import (ALL_METRICS, DEFAULT_METRICS, align, interval_energy_contrast, is_silent, mel_distance, pesq_wb,
                     prepare_pair, score_pair, si_sdr, stft_distance, stoi, to_mono, voicing, vuv_f1)

__all__ = ["CodebookStats", "bitrate_on_set", "codec_bitrate", "EvalResult", "evaluate_dirs", "evaluate_manifest",
           "pair_files", "read_manifest", "summarize", "ModelScorer", "load_model_scorer", "ALL_METRICS",
           "DEFAULT_METRICS", "align", "interval_energy_contrast", "is_silent", "mel_distance", "pesq_wb", "prepare_pair", "score_pair",
           "si_sdr", "stft_distance", "stoi", "to_mono", "voicing", "vuv_f1"]
