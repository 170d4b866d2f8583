"""Vector quantisation with an EMA-updated Euclidean codebook (EnCodec / WavTokenizer / SpeechTokenizer).

Nearest-code search always runs in fp32, also under bf16 autocast, so codes do not flip (or, opt-in on CUDA, as
split-bf16 tensor-core GEMMs accurate to ~2^-16: :attr:`EuclideanCodebook.cuda_split_bf16_search`).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..nn.conv import TimeMajorWeights, cpu_inference, packed_linear
from ..nn.split_bf16 import mm_fp32, split_bf16, split_input_operand, split_weight_operand


class QuantizerOutput(NamedTuple):
    """What a quantizer returns in training.

    quantized: ``[B, D, T]`` (straight-through estimator applied).
    codes: ``[B, K, T]`` long.
    losses: named scalar losses (``commitment``, and ``codebook`` for learned codebooks).
    """
    quantized: torch.Tensor
    codes: torch.Tensor
    losses: dict


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def kmeans(samples: torch.Tensor, num_clusters: int, num_iters: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain k-means on ``samples [N, D]``: returns ``(centroids [num_clusters, D], counts [num_clusters])``.

    Starts from random samples (with replacement when N < num_clusters); empty clusters keep their centroid.
    """
    n = samples.shape[0]
    idx = torch.randperm(n, device=samples.device)[:num_clusters] if n >= num_clusters else \
        torch.randint(0, n, (num_clusters,), device=samples.device)
    means = samples[idx].clone()
    counts = torch.zeros(num_clusters, device=samples.device)
    for _ in range(num_iters):
        assign = torch.cdist(samples, means).argmin(dim=-1)
        counts = torch.bincount(assign, minlength=num_clusters).float()
        sums = torch.zeros_like(means).index_add_(0, assign, samples)
        nonempty = counts > 0
        means[nonempty] = sums[nonempty] / counts[nonempty, None]
    return means, counts


@torch.no_grad()
def seed_codebooks_from_latents(layers, latents: torch.Tensor) -> None:
    """Fill the Euclidean codebook of each of ``layers`` (``layer.codebook``, in residual order) with entries drawn
    at random (torch's global generator, on the latents' device) from the residual latents ``[N, D]`` that layer
    would quantize, so that an untrained codec's codes vary instead of collapsing onto a few entries (benchmarks
    and tests of random-weight codecs; the entries only, not the EMA statistics)."""
    for layer in layers:
        book = layer.codebook
        pick = torch.randint(0, latents.shape[0], (book.embed.shape[0],), device=latents.device)
        book.embed.copy_(latents[pick])
        latents = latents - book.embed[torch.cdist(latents, book.embed).argmin(-1)]


def nearest_code(x: torch.Tensor, embed: torch.Tensor, embed_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Index of the nearest row of ``embed [N, D]`` for each row of ``x [M, D]`` (Euclidean, fp32).

    Ranks ``|e|^2 - 2 x.e`` (``|x|^2`` is the same for every code), one fused GEMM; ``embed_sq`` is
    ``|e|^2 [N]`` when the caller has it.
    """
    with torch.autocast(x.device.type, enabled=False):
        x, embed = x.float(), embed.float()
        if embed_sq is None:
            embed_sq = embed.pow(2).sum(1)
        return torch.addmm(embed_sq[None], x, embed.t(), alpha=-2).argmin(dim=-1)


def split_bf16_queries(x: torch.Tensor) -> torch.Tensor:
    """``x [M, D]`` -> ``A [M, 3 D + 3]`` (bf16), the left operand of :func:`nearest_code_split_bf16`."""
    ones = torch.ones(x.shape[0], 3, dtype=torch.bfloat16, device=x.device)
    return torch.cat([split_input_operand(-2 * x.float(), 2), ones], 1)  # scaling by -2 is exact


def split_bf16_codebook(embed: torch.Tensor, embed_sq: torch.Tensor) -> torch.Tensor:
    """``embed [N, D]``, ``|e|^2 [N]`` -> ``B [N, 3 D + 3]`` (bf16), the right operand of
    :func:`nearest_code_split_bf16`."""
    return torch.cat([split_weight_operand(embed, 2), torch.stack(split_bf16(embed_sq, 3), dim=1)], 1)


def nearest_code_split_bf16(x: torch.Tensor, embed: torch.Tensor, embed_sq: torch.Tensor | None = None,
                            codebook_operand: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`nearest_code` as one bf16 tensor-core GEMM with fp32 accumulation: with ``-2 x = xh + xl`` and
    ``e = eh + el`` split into bf16 parts, ``A = [xh, xh, xl, 1, 1, 1]`` and ``B = [eh, el, eh, |e|^2 in three
    parts]`` give ``A . B = |e|^2 - 2 x.e`` up to the dropped ``xl . el`` term: scores to ~2^-16 relative (fp32's
    own rounding is 2^-24), so a code differs from the fp32 search only where two codes are that near a tie.
    ``codebook_operand``: :func:`split_bf16_codebook` of the codebook when the caller caches it."""
    with torch.autocast(x.device.type, enabled=False):
        if codebook_operand is None:
            codebook_operand = split_bf16_codebook(embed, embed.float().pow(2).sum(1) if embed_sq is None else embed_sq)
        return mm_fp32(split_bf16_queries(x), codebook_operand.t()).argmin(dim=-1)


class EuclideanCodebook(nn.Module):
    """An EMA codebook of ``codebook_size`` vectors of ``dim``.

    Buffers (checkpoint names): ``inited [1]``, ``cluster_size [N]``, ``embed [N, D]``, ``embed_avg [N, D]``.

    Training updates, in this order, from the assignments that produced this batch's output:
    k-means initialisation on the first batch (``kmeans_init``), EMA of counts and sums (``decay``),
    then dead-code restart: a code whose EMA count fell below ``threshold_ema_dead_code`` is replaced
    by a random batch vector, *and its EMA statistics are reset to that vector* so the next EMA step
    does not undo the restart (the stale-count bug of the EnCodec implementation, where the EMA
    average overwrote every restarted code on the next step).
    """

    def __init__(self, dim: int, codebook_size: int, decay: float = 0.99, epsilon: float = 1e-5,
                 kmeans_init: bool = True, kmeans_iters: int = 10, threshold_ema_dead_code: float = 2.0):
        super().__init__()
        self.dim, self.codebook_size = dim, codebook_size
        self.decay, self.epsilon = decay, epsilon
        self.kmeans_iters = kmeans_iters
        self.threshold_ema_dead_code = threshold_ema_dead_code
        embed = torch.zeros(codebook_size, dim) if kmeans_init else nn.init.kaiming_uniform_(
            torch.empty(codebook_size, dim))
        self.register_buffer("inited", torch.tensor([not kmeans_init], dtype=torch.float))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())

    #: CUDA inference: the nearest-code search as one bf16 tensor-core GEMM of split operands
    #: (:func:`nearest_code_split_bf16`, scores to ~2^-16 relative) instead of an fp32 GEMM without tensor cores
    #: (4.2 of 43.5 ms of a compiled batch-64 bf16 encode on an H100). Off: measured, it made that encode 1.4%
    #: slower, and 3% slower beside the compiled switches (H100, benchmarks/RESULTS.md session 10); kept for
    #: GPUs where the fp32 search costs more (``benchmarks/codec_speed.py --switch cuda_split_bf16_search=True``).
    cuda_split_bf16_search = False

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., D] -> codes [...]``."""
        shape = x.shape[:-1]
        flat = x.reshape(-1, self.dim)
        if self._onednn_search_applies(flat):
            return self._onednn_search(flat).view(shape)
        if self.cuda_split_bf16_search and flat.is_cuda and not torch.is_grad_enabled():
            operand = TimeMajorWeights.get(self, "split_bf16_codebook", self.embed,
                                           lambda e: split_bf16_codebook(e, self._embed_sq()))
            return nearest_code_split_bf16(flat, self.embed, codebook_operand=operand).view(shape)
        return nearest_code(flat, self.embed, self._embed_sq()).view(shape)

    def _onednn_search_applies(self, x: torch.Tensor) -> bool:
        """CPU inference (the CPU fast paths' switch on, fp32 codebook, no autograd, eager, oneDNN present)."""
        return cpu_inference(x) and self.embed.dtype == torch.float32 and torch.backends.mkldnn.is_available()

    def _onednn_search(self, x: torch.Tensor) -> torch.Tensor:
        """:func:`nearest_code` as one oneDNN GEMM with the codebook prepacked once: ``x . (-2 e) + |e|^2``
        (the same scores: scaling by -2 is exact), no broadcast copy of ``|e|^2``. Cached on the module,
        rebuilt when the codebook changes."""
        with torch.autocast("cpu", enabled=False):
            scores = packed_linear(x.float(), self, "onednn_search", self.embed, lambda e: (-2 * e, e.pow(2).sum(1)))
        return scores.argmin(dim=-1)

    def _embed_sq(self) -> torch.Tensor:
        """``|e|^2`` of the codes, cached until the codebook changes (inference reuses it)."""
        return TimeMajorWeights.get(self, "embed_sq", self.embed, lambda e: e.float().pow(2).sum(1))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [...] -> vectors [..., D]``."""
        return F.embedding(codes, self.embed)

    @torch.no_grad()
    def _init_embed(self, flat: torch.Tensor):
        means, counts = kmeans(flat, self.codebook_size, self.kmeans_iters)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(means, 0)
            dist.broadcast(counts, 0)
        self.embed.copy_(means)
        self.embed_avg.copy_(means * counts[:, None])
        self.cluster_size.copy_(counts)
        self.inited.fill_(1.0)

    @torch.no_grad()
    def update(self, flat: torch.Tensor, codes: torch.Tensor):
        """EMA update and dead-code restart from ``flat [N, D]`` and its ``codes [N]`` (training only)."""
        flat = flat.float()
        onehot_sum = torch.bincount(codes, minlength=self.codebook_size).float()
        embed_sum = torch.zeros_like(self.embed).index_add_(0, codes, flat)
        _all_reduce_sum(onehot_sum)
        _all_reduce_sum(embed_sum)
        self.cluster_size.mul_(self.decay).add_(onehot_sum, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(embed_sum, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (n + self.codebook_size * self.epsilon) * n
        self.embed.copy_(self.embed_avg / smoothed[:, None])
        self._restart_dead_codes(flat)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor):
        if self.threshold_ema_dead_code <= 0:
            return
        dead = self.cluster_size < self.threshold_ema_dead_code
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        picks = torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)
        new = flat[picks]
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(new, 0)
        # Restart with a count at the threshold so the code is not immediately dead again, and an EMA sum
        # consistent with the new vector so the next EMA step keeps it.
        self.embed[dead] = new
        self.cluster_size[dead] = self.threshold_ema_dead_code
        self.embed_avg[dead] = new * self.threshold_ema_dead_code

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [..., D] -> (codes [...], vectors [..., D])``.

        In training mode also initialises and then updates the codebook; the vectors returned are
        those of the codebook before this batch's update.
        """
        flat = x.reshape(-1, self.dim).detach().float()
        if self.training and not bool(self.inited.item()):
            self._init_embed(flat)
        codes = nearest_code(flat, self.embed)
        quantized = F.embedding(codes, self.embed).view(*x.shape[:-1], self.dim)
        if self.training:
            self.update(flat, codes)
        return codes.view(x.shape[:-1]), quantized


class VectorQuantizer(nn.Module):
    """One EMA-codebook VQ layer on ``[B, D, T]`` with optional in/out projections to ``codebook_dim``."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int | None = None, decay: float = 0.99,
                 epsilon: float = 1e-5, kmeans_init: bool = True, kmeans_iters: int = 10,
                 threshold_ema_dead_code: float = 2.0, commitment_weight: float = 1.0):
        super().__init__()
        codebook_dim = codebook_dim or dim
        self.project_in = nn.Linear(dim, codebook_dim) if codebook_dim != dim else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if codebook_dim != dim else nn.Identity()
        self.codebook = EuclideanCodebook(codebook_dim, codebook_size, decay, epsilon, kmeans_init,
                                          kmeans_iters, threshold_ema_dead_code)
        self.codebook_size = codebook_size
        self.commitment_weight = commitment_weight

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, D, T] -> codes [B, T]``."""
        return self.codebook.encode(self.project_in(x.transpose(1, 2)))

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference: ``[B, D, T] -> (codes [B, T], quantized [B, D, T])``."""
        codes = self.encode(x)
        return codes, self.decode(codes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [B, T] -> [B, D, T]``."""
        return self.project_out(self.codebook.decode(codes)).transpose(1, 2)

    def forward(self, x: torch.Tensor):
        """``[B, D, T] -> (quantized [B, D, T] with straight-through gradient, codes [B, T], losses)``."""
        h = self.project_in(x.transpose(1, 2))
        codes, q = self.codebook(h)
        losses = {}
        if self.training:
            losses["commitment"] = F.mse_loss(h.float(), q.detach().float()) * self.commitment_weight
            q = h + (q - h).detach()
        return self.project_out(q).transpose(1, 2), codes, losses
