"""EnCodec's gradient balancer: each loss gets a fixed share of the gradient reaching the generator output.

For losses ``l_i(y)`` of one generator output ``y`` with partial gradients ``g_i = dl_i/dy``, the
balanced gradient sent back into the generator is::

    G = sum_i  total_norm * (w_i / sum_j w_j) * g_i / ema(||g_i||)

so loss ``i`` contributes a gradient of norm about ``total_norm * w_i / sum_j w_j`` whatever its scale.
``||g||`` is the mean over batch items of each item's gradient norm (``per_batch_item``) or the norm of
the whole gradient; ``ema`` is a bias-corrected exponential moving average (decay ``ema_decay``) of those
norms. Under ``torch.distributed`` the norms are averaged over ranks (weighted by batch size) before
the average is updated, so every rank applies the same scales. With ``balance_grads=False`` the
gradient is the plain weighted sum ``sum_i w_i g_i``.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError


class Balancer(nn.Module):
    """Args:
        weights: default weight of each loss by name (can also be given per call).
        total_norm: norm the balanced gradient aims at (per batch item with ``per_batch_item``).
        ema_decay: decay of the moving average of the gradient norms (0.999 in EnCodec; 0 uses the
            current norms only).
        per_batch_item: measure norms per batch item and average them.
        balance_grads: rescale (``True``) or just weight the gradients.
        epsilon: added to the averaged norms.

    The moving averages are not parameters or buffers (the set of losses is only known once they
    arrive): checkpoint them with :meth:`training_state` / :meth:`load_training_state` (plain floats,
    e.g. from a training task's ``state_dict``).
    """

    def __init__(self, weights: Optional[Mapping[str, float]] = None, total_norm: float = 1.0, ema_decay: float = 0.999,
                 per_batch_item: bool = True, balance_grads: bool = True, epsilon: float = 1e-12):
        super().__init__()
        if not 0.0 <= ema_decay < 1.0:
            raise ConfigError(f"balancer: ema_decay must be in [0, 1), got {ema_decay}")
        self.weights = dict(weights or {})
        self.total_norm, self.ema_decay = float(total_norm), float(ema_decay)
        self.per_batch_item, self.balance_grads, self.epsilon = per_batch_item, balance_grads, epsilon
        self._ema: Dict[str, Tuple[float, float]] = {}   # name -> (decayed sum of norms, decayed count)
        self.metrics: Dict[str, float] = {}

    # -- state ----------------------------------------------------------------------------------
    def training_state(self) -> dict:
        """``{"ema": {loss name: [decayed sum of norms, decayed count]}}`` (plain floats)."""
        return {"ema": {k: [a, b] for k, (a, b) in self._ema.items()}}

    def load_training_state(self, state: Mapping) -> None:
        self._ema = {k: (float(a), float(b)) for k, (a, b) in dict(state.get("ema", {})).items()}

    # -- core -----------------------------------------------------------------------------------
    def _norm(self, grad: torch.Tensor) -> torch.Tensor:
        g = grad.float()
        if self.per_batch_item and g.dim() > 1:
            return g.flatten(1).norm(dim=1).mean()
        return g.norm()

    def _average_norms(self, names: list, norms: list, count: int) -> Dict[str, float]:
        vec = torch.stack(norms).float().detach()
        if dist.is_available() and dist.is_initialized():
            packed = torch.cat([vec * count, vec.new_tensor([float(count)])])
            dist.all_reduce(packed, op=dist.ReduceOp.SUM)
            vec = packed[:-1] / packed[-1]
        values = vec.tolist()
        out = {}
        for name, v in zip(names, values):
            s, c = self._ema.get(name, (0.0, 0.0))
            s, c = s * self.ema_decay + v, c * self.ema_decay + 1.0
            self._ema[name] = (s, c)
            out[name] = s / c
        return out

    def gradient(self, losses: Mapping[str, torch.Tensor], output: torch.Tensor,
                 weights: Optional[Mapping[str, float]] = None) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, float]]:
        """Balanced gradient w.r.t. ``output`` (same shape and dtype).

        Returns ``(grad, effective_loss, scales)``: ``effective_loss = sum_i scale_i * l_i`` (detached,
        what the gradient is the gradient of, for logging), ``scales`` the factor applied to each ``g_i``.
        Losses with weight 0 are skipped.
        """
        weights = {**self.weights, **(weights or {})}
        missing = [k for k in losses if k not in weights]
        if missing:
            raise ConfigError(f"balancer: no weight for loss(es) {', '.join(missing)}")
        names = [k for k in losses if weights[k] != 0]
        grads, norms = {}, []
        for name in names:
            loss = losses[name]
            g = None
            if loss.requires_grad:
                g, = torch.autograd.grad(loss, [output], retain_graph=True, allow_unused=True)
            grads[name] = torch.zeros_like(output) if g is None else g
            norms.append(self._norm(grads[name]))
        count = output.shape[0] if self.per_batch_item and output.dim() > 1 else 1
        total_grad = torch.zeros_like(output, dtype=torch.float32)
        effective = torch.zeros((), device=output.device, dtype=torch.float32)
        scales: Dict[str, float] = {}
        if names:
            avg = self._average_norms(names, norms, count)
            total_weight = sum(weights[k] for k in names)
            if self.balance_grads and total_weight <= 0:
                raise ConfigError("balancer: the weights of the balanced losses must sum to a positive number")
            norm_sum = sum(avg.values()) or 1.0
            self.metrics = {f"ratio/{k}": v / norm_sum for k, v in avg.items()}
            for name in names:
                if self.balance_grads:
                    scale = weights[name] / total_weight * self.total_norm / (self.epsilon + avg[name])
                else:
                    scale = float(weights[name])
                scales[name] = scale
                total_grad.add_(grads[name].float(), alpha=scale)
                effective = effective + scale * losses[name].detach().float()
        return total_grad.to(output.dtype), effective, scales

    def surrogate(self, losses: Mapping[str, torch.Tensor], output: torch.Tensor,
                  weights: Optional[Mapping[str, float]] = None) -> torch.Tensor:
        """A scalar whose value is the effective loss and whose gradient w.r.t. ``output`` is the
        balanced gradient: ``surrogate.backward()`` (together with other losses) trains the generator."""
        grad, effective, _ = self.gradient(losses, output, weights)
        dot = (output.float() * grad.float()).sum()
        return dot - dot.detach() + effective

    def backward(self, losses: Mapping[str, torch.Tensor], output: torch.Tensor,
                 weights: Optional[Mapping[str, float]] = None) -> torch.Tensor:
        """Back-propagate the balanced gradient from ``output``; returns the effective loss."""
        grad, effective, _ = self.gradient(losses, output, weights)
        output.backward(grad)
        return effective
