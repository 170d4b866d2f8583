"""Replay a function through CUDA graphs, one graph per input shape.

Small batches are bound by kernel launches (an LSTM over 750 frames launches 3,000 kernels; a Vocos
decoder ~150): capturing the work once and replaying it removes that host overhead. Outputs equal those
of the plain call.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch


class CUDAGraphCache:
    """Wrap ``fn(x) -> tensor``. On CUDA without grad, the first call of each (shape, dtype, autocast)
    captures a graph; later calls copy ``x`` into its static input and replay. Anything else runs
    ``fn`` directly. At most ``max_graphs`` graphs are kept (least recently used dropped)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], max_graphs: int = 8, warmup: int = 2):
        self.fn, self.max_graphs, self.warmup = fn, max_graphs, warmup
        self.graphs: OrderedDict = OrderedDict()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_cuda or torch.is_grad_enabled() or torch.cuda.is_current_stream_capturing():
            return self.fn(x)
        key = (tuple(x.shape), x.dtype, x.device, torch.is_autocast_enabled("cuda"),
               torch.get_autocast_dtype("cuda"))
        entry = self.graphs.get(key)
        if entry is None:
            entry = self._capture(x)
            self.graphs[key] = entry
            if len(self.graphs) > self.max_graphs:
                self.graphs.popitem(last=False)
        else:
            self.graphs.move_to_end(key)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()

    def _capture(self, x: torch.Tensor):
        static_in = x.clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):  # warm-up outside the capture (cuDNN autotuning, allocations)
            for _ in range(self.warmup):
                self.fn(static_in)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_out = self.fn(static_in)
        return graph, static_in, static_out

    def clear(self):
        self.graphs.clear()
