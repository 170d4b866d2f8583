"""Process groups under plain ``torchrun`` (one node or many), and the data-parallel collectives.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR`` / ``MASTER_PORT``); the
same command works on one node (``--nproc_per_node 8``) and on several (``--nnodes 2 --node_rank i
--rdzv_endpoint host:port``). Without those variables everything runs in one process and every
collective here is a no-op.

Data parallelism is done by hand rather than with the ``DistributedDataParallel`` wrapper: parameters
are broadcast from rank 0 once, gradients are averaged by bucketed all-reduces inside
:meth:`TrainContext.step <audiocodec.train.trainer.TrainContext.step>`, and buffers are broadcast from
rank 0 after each step (what DDP does by default). The wrapper assumes one forward and one backward per
module per iteration; GAN steps break that (the discriminator runs in both the D and the G step, a
module may be skipped for some steps, quantizer dropout leaves codebooks unused), which is where
multi-GPU codec training usually crashes or hangs. Here any step structure works as long as every rank
makes the same ``backward_and_step`` calls in the same order.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import torch
import torch.distributed as dist

BUCKET_BYTES = 32 * 1024 * 1024

# A gloo group beside an NCCL one, for small control messages on CPU tensors: agreeing on them then needs
# no GPU synchronisation (see average_gradients). None: the default group already works on CPU tensors.
_CONTROL_GROUP = None


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the ``torchrun`` environment (``(0, 1, 0)`` without it)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device: str = "auto", timeout_minutes: float = 30.0) -> DistInfo:
    """Pick this process's device and join the process group when launched by ``torchrun``.

    ``device``: ``"auto"`` (``cuda:LOCAL_RANK`` when CUDA is available, else CPU), ``"cpu"``, ``"cuda"``.
    The backend is NCCL on CUDA and gloo on CPU.
    """
    rank, world, local = env_world()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            from ..errors import ConfigError
            raise ConfigError("trainer.device is 'cuda' but CUDA is not available; use 'cpu' or 'auto'")
        dev = torch.device("cuda", local if device == "cuda" else torch.device(device).index or 0)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    info = DistInfo(rank, world, local, dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = dict(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
        if dev.type == "cuda":
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
        info.initialized_here = True
        if backend == "nccl":
            global _CONTROL_GROUP
            _CONTROL_GROUP = dist.new_group(backend="gloo")
    return info


def shutdown(info: DistInfo) -> None:
    global _CONTROL_GROUP
    _CONTROL_GROUP = None
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()
        info.initialized_here = False


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if _active():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; for small things only)."""
    if not _active():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_object(obj: Any) -> list:
    if not _active():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _buckets(tensors: list[torch.Tensor]) -> Iterable[list[torch.Tensor]]:
    by_type: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        by_type.setdefault((t.dtype, t.device), []).append(t)
    for group in by_type.values():
        bucket: list[torch.Tensor] = []
        size = 0
        for t in group:
            bucket.append(t)
            size += t.numel() * t.element_size()
            if size >= BUCKET_BYTES:
                yield bucket
                bucket, size = [], 0
        if bucket:
            yield bucket


def _all_reduce_flat(tensors: list[torch.Tensor], average: bool) -> None:
    """Sum (or average) ``tensors`` across ranks in place, a few large all-reduces at a time."""
    world = dist.get_world_size()
    pending = []
    for bucket in _buckets(tensors):
        flat = torch._utils._flatten_dense_tensors(bucket)
        pending.append((bucket, flat, dist.all_reduce(flat, async_op=True)))
    for bucket, flat, work in pending:
        work.wait()
        if average:
            flat.div_(world)
        for t, synced in zip(bucket, torch._utils._unflatten_dense_tensors(flat, bucket)):
            t.copy_(synced)


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average ``.grad`` of ``params`` over all ranks.

    A parameter that has a gradient on some ranks but not on others (a branch not taken there, an
    unused codebook) gets a zero gradient where it had none, so every rank reduces the same tensors;
    a parameter without a gradient anywhere keeps ``grad = None`` (the optimizer skips it, as without
    data parallelism).
    """
    if not _active() or not params:
        return
    # which parameters have a gradient is known on the host: agree on it over CPU tensors (gloo), so the
    # GPU never waits for this
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.uint8)
    if _CONTROL_GROUP is not None or dist.get_backend() != "nccl":
        dist.all_reduce(has, op=dist.ReduceOp.MAX, group=_CONTROL_GROUP)
    else:  # an NCCL group this module did not create: its collectives need device tensors
        has = has.to(params[0].device)
        dist.all_reduce(has, op=dist.ReduceOp.MAX)
    grads = []
    for p, any_rank in zip(params, has.tolist()):
        if not any_rank:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    _all_reduce_flat(grads, average=True)


@torch.no_grad()
def broadcast_tensors(tensors: list[torch.Tensor], src: int = 0) -> None:
    """Copy ``tensors`` of rank ``src`` to every rank, in place."""
    if not _active() or not tensors:
        return
    for bucket in _buckets(list(tensors)):
        flat = torch._utils._flatten_dense_tensors(bucket)
        dist.broadcast(flat, src=src)
        for t, synced in zip(bucket, torch._utils._unflatten_dense_tensors(flat, bucket)):
            t.copy_(synced)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over all ranks (a copy)."""
    if not _active():
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    if not _active():
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()


def any_rank(flag: bool, device: Optional[torch.device] = None) -> bool:
    """True on every rank when ``flag`` is true on some rank."""
    if not _active():
        return flag
    t = torch.tensor([int(flag)], device=device or torch.device("cpu"))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
