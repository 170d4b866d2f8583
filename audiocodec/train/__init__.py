"""Training: one :class:`Trainer` for every model, driven by a :class:`Task` (see :mod:`.trainer`)."""
from . import toy  # noqa: F401  (registers toy_regression)
from . import codec_task  # noqa: F401  (registers codec_gan)
from . import tts_task  # noqa: F401  (registers tts_lm)
from . import song_task  # noqa: F401  (registers song_lm)
from . import ctc_task  # noqa: F401  (registers ctc_asr)
from .checkpoint import list_checkpoints, load_checkpoint
from .task import TASKS, Task
from .trainer import TRAINER_DEFAULTS, TrainContext, Trainer, resolve_config

__all__ = ["TASKS", "Task", "TRAINER_DEFAULTS", "TrainContext", "Trainer", "list_checkpoints",
           "load_checkpoint", "resolve_config"]
