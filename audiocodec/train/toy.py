"""``toy_regression``: a tiny MLP fitting a fixed random teacher, to test the trainer without codecs.

With ``two_optimizers`` the body and the head have their own optimizers, stepped one after the other
in each step like a GAN's discriminator and generator.
"""
from __future__ import annotations

import math
import time
from typing import Optional

import torch
from torch import nn
from torch.utils.data import Dataset

from .task import TASKS, Task


class ToyDataset(Dataset):
    """``num_samples`` pairs ``(x [in_dim], y [1])`` with ``y = tanh(x @ w1) @ w2`` for a fixed teacher."""

    def __init__(self, num_samples: int, in_dim: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        teacher_g = torch.Generator().manual_seed(12345)
        w1 = torch.randn(in_dim, 16, generator=teacher_g) / math.sqrt(in_dim)
        w2 = torch.randn(16, 1, generator=teacher_g) / 4
        self.x = torch.randn(num_samples, in_dim, generator=g)
        self.y = torch.tanh(self.x @ w1) @ w2

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


@TASKS.register("toy_regression")
class ToyRegression(Task):
    """Args:
        in_dim, hidden: MLP sizes.
        num_samples, val_samples: sizes of the synthetic training and validation sets.
        noise: std of Gaussian noise added to the inputs in each step (exercises the global RNG).
        dropout: dropout after the hidden layer (exercises the global RNG too).
        two_optimizers: separate ``body`` and ``head`` optimizers, stepped in turn.
        step_delay: seconds to sleep per step (tests that kill a run need it to last).
        dump_final: write each rank's final weights to ``run_dir/final_rank{r}.safetensors``.
    """

    def __init__(self, in_dim: int = 8, hidden: int = 32, num_samples: int = 256, val_samples: int = 64,
                 noise: float = 0.0, dropout: float = 0.0, two_optimizers: bool = False, step_delay: float = 0.0,
                 dump_final: bool = False, data_seed: int = 1234):
        self.in_dim, self.hidden, self.num_samples, self.val_samples = in_dim, hidden, num_samples, val_samples
        self.noise, self.dropout, self.two = noise, dropout, two_optimizers
        self.step_delay, self.dump_final, self.data_seed = step_delay, dump_final, data_seed
        self.steps_seen = 0

    def build(self, ctx):
        self.body = nn.Sequential(nn.Linear(self.in_dim, self.hidden), nn.Tanh(), nn.Dropout(self.dropout))
        self.head = nn.Linear(self.hidden, 1)
        return {"body": self.body, "head": self.head}

    def train_dataset(self):
        return ToyDataset(self.num_samples, self.in_dim, self.data_seed)

    def val_dataset(self) -> Optional[Dataset]:
        return ToyDataset(self.val_samples, self.in_dim, self.data_seed + 1) if self.val_samples else None

    def optimizers(self):
        if self.two:
            return {"body": self.body, "head": self.head}
        return {"main": list(self.body.parameters()) + list(self.head.parameters())}

    def training_step(self, batch, step, ctx):
        x, y = batch
        if self.noise:
            x = x + self.noise * torch.randn_like(x)
        if self.step_delay:
            time.sleep(self.step_delay)
        self.steps_seen += 1
        if not self.two:
            loss = nn.functional.mse_loss(self.head(self.body(x)).float(), y)
            ctx.backward_and_step("main", loss)
            return {"loss": loss}
        # the "discriminator / generator" pattern: two losses, two optimizers, one after the other
        loss_body = nn.functional.mse_loss(self.head(self.body(x)).float(), y)
        ctx.backward_and_step("body", loss_body)
        with ctx.fp32():
            loss_head = nn.functional.mse_loss(self.head(self.body(x).detach().float()), y)
        ctx.backward_and_step("head", loss_head)
        return {"loss": loss_head, "loss_body": loss_body}

    def validation_step(self, batch, ctx):
        x, y = batch
        return {"loss": nn.functional.mse_loss(self.head(self.body(x)).float(), y)}

    def log_media(self, writer, step, ctx):
        x = torch.linspace(-3, 3, 64, device=ctx.device)[:, None].expand(64, self.in_dim)
        curve = self.head(self.body(x)).float().cpu()
        image = (curve - curve.min()) / (curve.max() - curve.min() + 1e-8)
        writer.add_image("toy/response", image.T.expand(8, 64)[None], step)
        t = torch.arange(800) / 8000
        writer.add_audio("toy/tone", 0.1 * torch.sin(2 * math.pi * 440 * t), step, sample_rate=8000)

    def state_dict(self) -> dict:
        return {"steps_seen": self.steps_seen}

    def load_state_dict(self, state: dict) -> None:
        self.steps_seen = int(state.get("steps_seen", 0))

    def on_train_end(self, ctx):
        if self.dump_final:
            from safetensors.torch import save_file
            state = {f"{n}.{k}": v.detach().cpu().contiguous() for n, m in self.modules.items()
                     for k, v in m.state_dict().items()}
            save_file(state, str(ctx.run_dir / f"final_rank{ctx.rank}.safetensors"))
