"""Published codec training-loss recipes as config fragments (``discriminators`` + ``loss``).

Each preset is ``{"discriminators": [...], "loss": {...}}``: the first is the config list of a
:class:`~audiocodec.discriminators.MultiDiscriminator`, the second the arguments of
:class:`~audiocodec.losses.CodecLoss`; recipes can paste them into YAML as they are.

* ``wavtokenizer`` (``decoder/experiment.py``): MPD hinge + MRD hinge + their feature matching (each
  averaged over sub-discriminators, feature maps summed) + 45 * log-mel L1 + 1000 * commitment + DAC's
  discriminator (5 periods + 3 multi-band STFTs, LSGAN, DC-free peak-normalised input). WavTokenizer
  *sums* the DAC terms over its 8 sub-discriminators instead of averaging: hence the weights 8.
  (Its MPD / MRD also take a ``bandwidth_id`` embedding; with one bandwidth it is left out here.)
* ``encodec`` (audiocraft's ``solver/compression/default.yaml``): MS-STFT discriminator (32 filters,
  n_fft 1024, 2048, 512, 256, 128, LeakyReLU 0.3), ``hinge_linear`` adversarial (generator ``-mean``)
  weight 4, feature matching (mean over maps) 4, waveform L1 0.1, multi-scale mel spectrogram 2
  (n_fft 64..1024, 64 mels from 64 Hz, L1 + MSE of log10(mel + 1e-5), normalised), gradient balancer
  (total norm 1, EMA 0.999, per batch item); the commitment loss is added outside the balancer.
  Difference left: audiocraft pads its msspec frames manually (``center=False``), here they are centred.
"""
from __future__ import annotations

import copy
from typing import Tuple

from ..errors import ConfigError

WAVTOKENIZER = {
    "discriminators": [
        {"type": "mpd", "name": "mpd"},
        {"type": "mrd", "name": "mrd"},
        {"type": "dac", "name": "dac", "window": "rect"},
    ],
    "loss": {
        "weights": {"mel": 45, "adversarial": 1, "feature": 1, "commitment": 1000,
                    "adversarial/dac": 8, "feature/dac": 8, "discriminator/dac": 8},
        "adversarial": {"mpd": "hinge", "mrd": "hinge", "dac": "lsgan"},
        "feature_layers": "sum",
        "mel": {"resolutions": [{"n_fft": 1024, "hop_length": 256, "n_mels": 100}]},
        "sample_rate": 24000,
    },
}

ENCODEC = {
    "discriminators": [
        {"type": "msstft", "name": "msstft", "filters": 32, "n_ffts": [1024, 2048, 512, 256, 128],
         "lrelu_slope": 0.3},
    ],
    "loss": {
        "weights": {"adversarial": 4, "feature": 4, "l1": 0.1, "stft": 2, "commitment": 1},
        "adversarial": "hinge_linear",
        "feature_layers": "mean",
        "stft": {"n_ffts": [64, 128, 256, 512, 1024], "hop_ratio": 0.25, "n_mels": 64, "f_min": 64,
                 "normalized": True, "mag_weight": 1, "log_weight": 1, "log_distance": "l2", "eps": 1e-5,
                 "eps_mode": "add", "pow": 1, "log10": True, "normalize": True},
        "balancer": {"total_norm": 1.0, "ema_decay": 0.999, "per_batch_item": True},
        "sample_rate": 24000,
    },
}

PRESETS = {"wavtokenizer": WAVTOKENIZER, "encodec": ENCODEC}


def get_preset(name: str) -> dict:
    """A deep copy of preset ``name`` (``wavtokenizer`` or ``encodec``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown loss preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return copy.deepcopy(PRESETS[name])


def build_preset(name: str, sample_rate: int | None = None) -> Tuple["MultiDiscriminator", "CodecLoss"]:  # noqa: F821
    """Build ``(MultiDiscriminator, CodecLoss)`` from preset ``name`` (optionally at another rate)."""
    from ..discriminators import MultiDiscriminator
    from . import CodecLoss
    from ..config import call_with_config
    preset = get_preset(name)
    if sample_rate is not None:
        preset["loss"]["sample_rate"] = int(sample_rate)
    return MultiDiscriminator(preset["discriminators"]), call_with_config(CodecLoss, preset["loss"], "loss")
