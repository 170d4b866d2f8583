"""The :class:`Task` interface: what a model brings to the one :class:`~audiocodec.train.Trainer`.

A task is chosen in a training config by ``task: {type: <name>, ...constructor args}`` and resolved in
:data:`TASKS` (a registry inside audiocodec, so a config never imports arbitrary code). See
:mod:`audiocodec.train.trainer` for the contract of each method and a GAN example.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from ..config import Registry
from ..errors import CheckpointError

if TYPE_CHECKING:
    from .trainer import TrainContext

TASKS = Registry("task")

#: What ``Task.optimizers`` maps each name to: a module, parameters, param-group dicts (AdamW and the
#: schedule are then built from ``optim.<name>``), or a ready ``torch.optim.Optimizer`` (only the
#: schedule is built from config).
OptimizerTarget = Union[nn.Module, list, torch.optim.Optimizer]


class Task:
    """Base class of training tasks. Override ``build``, ``train_dataset`` and ``training_step``;
    the rest have working defaults."""

    #: set by the trainer after ``build``: the named modules it checkpoints, moves and synchronizes
    modules: dict[str, nn.Module]

    def build(self, ctx: "TrainContext") -> Mapping[str, nn.Module]:
        """Create the trainable modules and return them by name (names without dots).

        The trainer moves them to ``ctx.device``, makes ranks start from rank 0's weights, saves them
        in checkpoints (keys ``"<name>.<param>"``) and keeps them in ``self.modules``.
        """
        raise NotImplementedError

    def train_dataset(self) -> Dataset:
        """A map-style dataset; the trainer batches it (``trainer.batch_size`` per rank)."""
        raise NotImplementedError

    def batch_sampler(self, dataset: Dataset, rank: int, world_size: int, seed: int, shuffle: bool):
        """This rank's training batches, or ``None`` for fixed-size batches of ``trainer.batch_size``.

        Override for dynamic batches (e.g. :class:`~audiocodec.train.data.BucketBatchSampler`); the
        sampler must have ``set_epoch(epoch, start_batch)``, ``len`` (batches of this rank in the current
        epoch, the same on every rank) and yield lists of indices, deterministically from ``seed`` and the
        epoch, so resuming is exact."""
        return None

    def val_dataset(self) -> Optional[Dataset]:
        """A map-style validation dataset, or ``None`` (no validation)."""
        return None

    def collate(self, items: list) -> Any:
        """Items -> one batch (default: ``torch.utils.data.default_collate``)."""
        return default_collate(items)

    def optimizers(self) -> Mapping[str, OptimizerTarget]:
        """Named optimizer targets (see :data:`OptimizerTarget`). Default: ``{"main": all modules}``."""
        return {"main": [p for m in self.modules.values() for p in m.parameters() if p.requires_grad]}

    def training_step(self, batch: Any, step: int, ctx: "TrainContext") -> Mapping[str, Any]:
        """One micro-batch of optimizer step ``step``: compute losses, call
        ``ctx.backward_and_step(name, loss)`` once per optimizer used, return scalars to log."""
        raise NotImplementedError

    def validation_step(self, batch: Any, ctx: "TrainContext") -> Mapping[str, Any]:
        """Scalars for one validation batch (averaged over batches and ranks, logged as ``val/<key>``).
        Modules are in eval mode, under ``torch.no_grad``; every rank must return the same keys."""
        return {}

    def log_media(self, writer, step: int, ctx: "TrainContext") -> None:
        """Write audio / images to ``writer`` (a tensorboard ``SummaryWriter``: ``add_audio``,
        ``add_image``, ``add_figure``). Rank 0 only, modules in eval mode, under ``torch.no_grad``:
        run no collective operations here."""

    def init_from(self, path: str) -> None:
        """Initialise weights for fine-tuning (``trainer.init_from``; ignored when resuming).

        Default: a trainer checkpoint folder, run folder or ``.safetensors`` file whose keys are
        ``"<module>.<param>"``; each module named there is loaded strictly. Codec tasks override this
        (e.g. with :func:`audiocodec.load_codec`) to start from released weights.
        """
        from safetensors.torch import load_file

        from .checkpoint import resolve_weights
        file = resolve_weights(path)
        state = load_file(str(file))
        names = {k.split(".", 1)[0] for k in state}
        unknown = names - set(self.modules)
        if unknown:
            raise CheckpointError(f"{file}: modules {sorted(unknown)} are not in this task ({sorted(self.modules)})")
        for name in names:
            prefix = name + "."
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            try:
                self.modules[name].load_state_dict(sub)
            except RuntimeError as e:
                raise CheckpointError(f"{file}: weights of {name!r} do not fit: {e}") from e

    def export(self, path=None):
        """Write the trained model in its own format to ``path`` (a folder) and return the file, or None
        when the task has none (used by ``trainer.best_metric``). Rank 0 only."""
        return None

    def state_dict(self) -> dict:
        """Extra state to checkpoint (plain tensors / numbers / strings / lists / dicts only)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""

    def on_train_end(self, ctx: "TrainContext") -> None:
        """Called on every rank after the last step (e.g. export the final model on rank 0)."""


class ExportingTask(Task):
    """A task around one model (``self.model``, the trainer's module ``self.export_name``) that has its own
    file format: the model is written to ``<run_dir>/<export_name>/`` at every checkpoint (rank 0,
    atomically; its EMA copy when there is one), and ``init_from`` loads such a file for fine-tuning.

    Subclasses set :attr:`export_name` and implement :meth:`save_model` / :meth:`load_model`; they keep
    ``self._ctx`` (the context given to ``build``) and ``self.export_model`` (whether to export)."""

    export_name: str = "model"
    export_model: bool = True
    _ctx = None

    def save_model(self, model: nn.Module, path):
        raise NotImplementedError

    def load_model(self, path) -> nn.Module:
        raise NotImplementedError

    def init_from(self, path: str) -> None:
        from ..errors import ConfigError
        weights = self.load_model(path).state_dict()
        try:
            self.model.load_state_dict(weights)
        except RuntimeError as e:
            raise ConfigError(f"init_from {path}: weights do not fit this model: {e}") from e

    def export(self, path=None):
        """Write the model (its EMA copy when there is one); returns the file, or None before ``build``."""
        from pathlib import Path
        ctx = self._ctx
        if ctx is None:
            return None
        model = ctx.ema.get(self.export_name, self.model)
        return self.save_model(model, Path(path) if path is not None else ctx.run_dir / self.export_name)

    def state_dict(self) -> dict:
        # the trainer asks for this once per checkpoint, on rank 0: the moment to export the model
        if self.export_model and self._ctx is not None and self._ctx.is_main:
            import logging
            try:
                logging.getLogger("audiocodec.train").info(f"exported the {self.export_name} model to {self.export()}")
            except OSError as e:  # a full disk must not lose the training checkpoint
                logging.getLogger("audiocodec.train").warning(f"could not export the {self.export_name} model: {e}")
        return {}


class TokenLMTask(ExportingTask):
    """An :class:`ExportingTask` training a token LM on length-bucketed dynamic batches: subclasses set
    ``train_examples`` / ``valid_examples`` (datasets with a ``lengths`` list) in ``build``, and
    ``max_tokens``, ``max_items``, ``bucket_size`` (see :class:`~audiocodec.train.data.BucketBatchSampler`)."""

    train_examples = None
    valid_examples = None
    max_tokens: int = 8000
    max_items = None
    bucket_size: int = 1000

    def train_dataset(self) -> Dataset:
        return self.train_examples

    def val_dataset(self) -> Optional[Dataset]:
        return self.valid_examples

    def check_init_codec(self, base, meta: dict) -> None:
        """The model loaded from ``self.init_path`` must have been trained on tokens of the codec that made
        the token folder ``self.train_dir`` (``meta``: its shards' codec record)."""
        from ..errors import ConfigError
        if base.codec_info.get("fingerprint") != meta["fingerprint"]:
            raise ConfigError(f"init_from {self.init_path} was trained on tokens of codec "
                              f"{base.codec_info.get('model_id')} ({base.codec_info.get('fingerprint')}); "
                              f"{self.train_dir} holds {meta['model_id']} ({meta['fingerprint']})")

    def batch_sampler(self, dataset, rank: int, world_size: int, seed: int, shuffle: bool):
        from .data import BucketBatchSampler
        return BucketBatchSampler(dataset.lengths, self.max_tokens, rank, world_size, shuffle, seed,
                                  self.max_items, self.bucket_size)
