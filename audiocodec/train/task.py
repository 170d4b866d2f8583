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

    def state_dict(self) -> dict:
        """Extra state to checkpoint (plain tensors / numbers / strings / lists / dicts only)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""

    def on_train_end(self, ctx: "TrainContext") -> None:
        """Called on every rank after the last step (e.g. export the final model on rank 0)."""
