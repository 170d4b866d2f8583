"""Shared test helpers: synthetic audio, codebook seeding for parity tests, recipe runs, a tiny LM."""
from __future__ import annotations

import math

import torch
from torch._dynamo.comptime import comptime


def synth_audio(seconds: float = 1.0, sample_rate: int = 24000, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """Varied synthetic audio ``[B, 1, L]``: chirps, harmonics with vibrato, noise bursts, silences."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * sample_rate)
    t = torch.arange(n) / sample_rate
    out = []
    for _ in range(batch):
        f0 = 100 + 300 * torch.rand(1, generator=g).item()
        vib = 1 + 0.05 * torch.sin(2 * math.pi * 5 * t)
        phase = 2 * math.pi * torch.cumsum(f0 * vib * (1 + t), 0) / sample_rate
        x = sum(torch.sin(k * phase) / k for k in range(1, 6))
        chirp = torch.sin(2 * math.pi * (200 + 2000 * t / seconds) * t)
        env = (torch.sin(2 * math.pi * 3 * t + torch.rand(1, generator=g).item() * 6) > -0.3).float()
        noise = torch.randn(n, generator=g) * (torch.sin(2 * math.pi * 1.3 * t) > 0.6).float()
        y = 0.3 * x * env + 0.2 * chirp * (1 - env) + 0.05 * noise
        out.append(y / y.abs().max() * 0.8)
    return torch.stack(out)[:, None].float()


@torch.no_grad()
def seed_euclidean_rvq(encoder, layers, wav: torch.Tensor, seed: int = 0):
    """Fill each EMA codebook (EnCodec layout: ``layer._codebook`` or ours: ``layer.codebook``) with
    residual encoder frames it will see, so codes vary instead of collapsing onto one entry."""
    g = torch.Generator().manual_seed(seed)
    residual = encoder(wav).transpose(1, 2).reshape(-1, encoder(wav).shape[1])
    for layer in layers:
        book = getattr(layer, "_codebook", None) or layer.codebook
        n = book.embed.shape[0]
        idx = torch.randint(0, residual.shape[0], (n,), generator=g)
        book.embed.copy_(residual[idx] + 1e-3 * torch.randn(n, residual.shape[1], generator=g))
        book.embed_avg.copy_(book.embed)
        book.inited.fill_(1)
        codes = torch.cdist(residual, book.embed).argmin(-1)
        residual = residual - book.embed[codes]


def assert_rvq_codes_match(codes: torch.Tensor, ref_codes: torch.Tensor, latents: torch.Tensor, codebooks,
                            rtol: float = 1e-4, max_flips: float = 0.01) -> None:
    """``codes`` equal ``ref_codes [B, K, T]`` except at near-ties: where a frame's codes first differ (layer
    k), both codes must be equally near the residual that the reference's codes leave of ``latents
    [B, D, T]`` (squared distances within ``rtol``; after a flip the later layers of that frame may differ),
    and at most ``max_flips`` of the frames (or one) may flip. Euclidean RVQ; ``codebooks``: ``[N, D]`` per layer.
    Another CPU's kernels round differently, and codebooks seeded with real frames make near-ties common."""
    assert codes.shape == ref_codes.shape
    frames = (codes != ref_codes).any(1).nonzero().tolist()   # [(b, t)]
    assert len(frames) <= max(1, max_flips * codes.shape[0] * codes.shape[-1]), f"{len(frames)} frames differ"
    for b, t in frames:
        residual = latents[b, :, t].double()
        k = int((codes[b, :, t] != ref_codes[b, :, t]).nonzero()[0])
        for layer in range(k):
            residual = residual - codebooks[layer][ref_codes[b, layer, t]].double()
        dist = ((residual[None] - codebooks[k].double()) ** 2).sum(-1)
        ours, theirs = dist[codes[b, k, t]], dist[ref_codes[b, k, t]]
        assert abs(ours - theirs) <= rtol * max(theirs, 1e-12), \
            f"frame {t} layer {k}: not a near-tie ({float(ours):.6g} vs {float(theirs):.6g})"


def run_recipe(script, options, overrides, timeout: float = 600):
    """Run an ``egs`` recipe script with ``options`` (list of str) and ``--set`` ``overrides``, with this
    Python's ``audiocodec`` on PATH and one thread; fail the test with the output's tail if it fails."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    cmd = ["bash", str(script), *options]
    for o in overrides:
        cmd += ["--set", o]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def tiny_lm(seed: int = 0, vocab_size: int = 40, **kw):
    """A 2-layer d=32 :class:`~audiocodec.lm.TransformerLM` in eval mode; ``init_std`` 0.2 makes its logits
    peaked enough for stable argmaxes."""
    from audiocodec.lm import TransformerLM
    torch.manual_seed(seed)
    args = dict(vocab_size=vocab_size, dim=32, num_layers=2, num_heads=4, init_std=0.2)
    args.update(kw)
    return TransformerLM(**args).eval()


# Probes of the paths a compiled codec takes. They record at trace time (torch._dynamo.comptime, whose function may
# name globals but no closure variables): a list appended at run time would be guarded by its length and recompile
# the codec on every call, inside a CUDA-graph capture too.
TRACED: list = []
_ORIGINALS: dict = {}


def _traced_taps(*args):
    comptime(lambda ctx: TRACED.append("taps"))
    return _ORIGINALS["taps"](*args)


def _traced_channels_last(self, x):
    comptime(lambda ctx: TRACED.append("channels_last"))
    return _ORIGINALS["channels_last"](self, x)


def _traced_matmul_attention(q, k, v):
    comptime(lambda ctx: TRACED.append("matmul_attention"))
    return _ORIGINALS["matmul_attention"](q, k, v)


def probe_compiled_paths(monkeypatch) -> list:
    """Turn on the compiled CUDA inference formulations (``ConvNeXtBlock.compiled_taps``,
    ``PaddedConv1d.compiled_channels_last``, ``AttnBlock.cuda_matmul_attention``) and wrap each in a probe;
    returns the (cleared) list that names each one traced."""
    from audiocodec.nn import conv, vocos
    originals = dict(taps=conv.depthwise_conv1d_taps, channels_last=conv.PaddedConv1d._forward_channels_last,
                     matmul_attention=vocos.matmul_attention)
    for name, fn in originals.items():   # the first call's: a second one in a test would see the probes
        _ORIGINALS.setdefault(name, fn)
    monkeypatch.setattr(vocos.ConvNeXtBlock, "compiled_taps", True)
    monkeypatch.setattr(conv.PaddedConv1d, "compiled_channels_last", True)
    monkeypatch.setattr(vocos.AttnBlock, "cuda_matmul_attention", True)
    monkeypatch.setattr(vocos, "depthwise_conv1d_taps", _traced_taps)
    monkeypatch.setattr(conv.PaddedConv1d, "_forward_channels_last", _traced_channels_last)
    monkeypatch.setattr(vocos, "matmul_attention", _traced_matmul_attention)
    TRACED.clear()
    return TRACED
