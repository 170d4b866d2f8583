"""Codec GAN training speed (optimizer steps per second): our recipe's step against the official
WavTokenizer training step, in one process on the same batch.

Ours: :class:`audiocodec.train.Trainer` built from a recipe (default ``recipes/codec/wavtokenizer_75.yaml``:
the full WavTokenizer-75 generator, MPD + MRD + DAC multi-band discriminators, 45 x mel + 1000 x
commitment), stepping through the trainer's own step (autocast, fused AdamW, gradient norms, skip of
non-finite steps), one discriminator and one generator update per step.

Official (``--wavtokenizer-repo PATH``, a local copy of jishengpeng/WavTokenizer): ``decoder.experiment.
WavTokenizer`` built from the repo's frame-75 config and driven as PyTorch Lightning 1.x drives it with two
optimizers: for each optimizer, the other's parameters frozen (``toggle_optimizer``), ``training_step(batch,
0, optimizer_idx)`` under the same autocast, backward, AdamW step, zero grad. Lightning itself is not needed:
when ``pytorch_lightning`` / ``transformers`` / ``matplotlib`` / ``huggingface_hub`` are not installed, small
stand-ins let the module import (the training step uses none of them).

Both get the same random batch already on the device: data loading is excluded (the trainer's loader runs
in worker processes beside the step). The first ``--warmup`` steps (k-means codebook initialisation,
cuDNN autotuning) are not timed. TF32 is set alike for both (``--tf32``, default on as in our trainer).

``--check-losses`` compares instead our loss terms with the official step's on one batch with the same
weights (the official random initialisation copied into ours; runs on the CPU).

    python3 benchmarks/train_speed.py --device cuda --dtypes bf16 fp32 --wavtokenizer-repo .peers/WavTokenizer
    python3 benchmarks/train_speed.py --device cpu --batch 2 --seconds 1 --check-losses --wavtokenizer-repo .peers/WavTokenizer
    python3 benchmarks/train_speed.py --device cpu --batch 2 --seconds 0.5 --steps 2 --warmup 1 \\
        --recipe recipes/codec/wavtokenizer_75_small.yaml
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import itertools
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from audiocodec.config import load_yaml  # noqa: E402
from audiocodec.data import write_manifest  # noqa: E402
from decoding_args import print_profile, set_inductor_config, sync  # noqa: E402


def time_steps(step, device: str, warmup: int, steps: int) -> float:
    """Optimizer steps per second of ``step()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps / (time.perf_counter() - t0)


def _autocast(device: str, dtype: str):
    if dtype == "bf16":
        return torch.autocast(device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


# -- ours ---------------------------------------------------------------------------------------------
def bench_trainer(recipe: str, manifest: Path, run_dir: Path, batch: int, crop_seconds: float, device: str,
                  overrides=()):
    """Our ``Trainer`` from ``recipe`` on the training ``manifest`` as the benchmarks use it: no validation,
    checkpoints, logs or progress bar; ``overrides`` (``KEY=VALUE``) applied last."""
    from audiocodec.train import Trainer
    sets = [f"task.data.train={manifest}", "task.data.valid=null", "task.valid_metrics=[]",
            f"trainer.batch_size={batch}", f"task.data.crop_seconds={crop_seconds}", f"trainer.device={device}",
            "trainer.log_every=1000000", "trainer.val_every=0", "trainer.ckpt_every=0", "trainer.progress=false"]
    return Trainer(load_yaml(recipe), run_dir, overrides=sets + list(overrides))


def ours(recipe: str, audio: torch.Tensor, dtype: str, tf32: bool, overrides: list, workdir: Path):
    """``(step, info)``: one call of ``step()`` is one optimizer step of our trainer on ``audio [B, T]``."""
    # the trainer reads a manifest when it is built; the timed steps use ``audio`` only
    wavs = workdir / "wavs"
    wavs.mkdir(parents=True, exist_ok=True)
    sr, n = 24000, audio.shape[-1]
    records = []
    for i in range(audio.shape[0]):
        path = wavs / f"{i}.wav"
        sf.write(path, audio[i].float().cpu().numpy(), sr)
        records.append({"id": str(i), "path": str(path), "duration": n / sr, "sample_rate": sr})
    manifest = write_manifest(workdir / "train.jsonl", records)
    trainer = bench_trainer(recipe, manifest, workdir / "run", audio.shape[0], n / sr, audio.device.type,
                            [f"trainer.precision={dtype}", "trainer.num_workers=0",
                             f"trainer.tf32={str(tf32).lower()}", *overrides])
    task = trainer.task
    for m in task.modules.values():
        m.train()
    trainer._acc = {}  # what fit() sets up for the step's logs
    stream = itertools.repeat({"audio": audio.unsqueeze(1)})

    def step():
        trainer._train_step(stream)
    step.task = task
    gen = task.modules["codec"] if "codec" in task.modules else None
    disc = [m for k, m in task.modules.items() if k != "codec"]
    info = {"generator_params": _params(gen) if gen is not None else None, "discriminator_params": _params(*disc)}
    return step, info


# -- official WavTokenizer ----------------------------------------------------------------------------
class _Anything:
    """Stand-in for names of optional packages the official module imports but its training step never uses."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return self

    def __getattr__(self, name):
        return _Anything()


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything


class _LightningModule(nn.Module):
    """What ``VocosExp`` uses of ``pytorch_lightning.LightningModule`` (1.x) outside a Trainer."""

    def save_hyperparameters(self, ignore=()):
        caller = inspect.currentframe().f_back
        hp = {k: v for k, v in caller.f_locals.items() if k not in ("self", "__class__", *ignore)}
        self.hparams = types.SimpleNamespace(**hp)

    def log(self, *args, **kwargs):
        pass


def _stub_missing_packages() -> list:
    stubbed = []
    for name in ("pytorch_lightning", "transformers", "matplotlib", "matplotlib.pyplot", "huggingface_hub"):
        parent = name.split(".")[0]
        if parent in stubbed or importlib.util.find_spec(parent) is None:
            module = _StubModule(name)
            if name == "pytorch_lightning":
                module.LightningModule = _LightningModule
            sys.modules[name] = module
            stubbed.append(name)
    return stubbed


def _instantiate(spec: dict):
    module, _, cls = spec["class_path"].rpartition(".")
    args = {k: (_instantiate(v) if isinstance(v, dict) and "class_path" in v else v)
            for k, v in spec.get("init_args", {}).items()}
    return getattr(importlib.import_module(module), cls)(**args)


def build_official(repo: str, device) -> tuple[nn.Module, dict, list]:
    """The official WavTokenizer-75 Lightning module (frame-75 config, random weights, training mode, codebook
    marked initialised), its config's ``init_args`` and the packages stood in for. Its ``log`` calls are kept in
    ``model.logged`` (name -> value)."""
    sys.path.insert(0, str(Path(repo).resolve()))
    stubbed = _stub_missing_packages()
    from decoder.experiment import WavTokenizer

    class Bench(WavTokenizer):
        global_step = 1      # not a multiple of 1000: no tensorboard media in the step
        global_rank = 0

        @property
        def device(self):
            return next(self.parameters()).device

        def log(self, name, value, *args, **kwargs):
            self.logged[name] = value

    cfg = load_yaml(next(Path(repo, "configs").glob("*frame75*.yaml")))["model"]["init_args"]
    parts = {k: _instantiate(cfg[k]) for k in ("feature_extractor", "backbone", "head")}
    hp = {k: v for k, v in cfg.items() if k not in parts}
    hp.update(evaluate_utmos=False, evaluate_pesq=False, evaluate_periodicty=False)
    model = Bench(**parts, **hp).to(device).train()
    model.logged = {}
    model.train_discriminator = True   # pretrain_mel_steps: 0
    for name, buf in model.named_buffers():   # the one-off k-means initialisation of the codebook is not a step
        if name.endswith("_codebook.inited"):
            buf.fill_(1)
        elif name.endswith("_codebook.embed"):
            buf.normal_()
    return model, cfg, stubbed


def official(repo: str, audio: torch.Tensor, dtype: str):
    """``(step, info)`` for the official WavTokenizer-75 training step (see the module docstring)."""
    model, cfg, stubbed = build_official(repo, audio.device)
    disc = [model.multiperioddisc, model.multiresddisc, model.dac]
    gen = [model.feature_extractor, model.backbone, model.head]
    d_params = [p for m in disc for p in m.parameters()]
    g_params = [p for m in gen for p in m.parameters()]
    lr = float(cfg["initial_learning_rate"])
    opts = [torch.optim.AdamW(d_params, lr=lr), torch.optim.AdamW(g_params, lr=lr)]  # configure_optimizers
    others = [g_params, d_params]
    all_params = list(model.parameters())

    def step():
        for idx, opt in enumerate(opts):
            flags = [p.requires_grad for p in all_params]
            for p in others[idx]:           # Lightning's toggle_optimizer
                p.requires_grad_(False)
            with _autocast(audio.device.type, dtype):
                loss = model.training_step(audio, 0, idx)
            loss.backward()
            opt.step()
            opt.zero_grad()
            for p, f in zip(all_params, flags):  # untoggle_optimizer
                p.requires_grad_(f)
    return step, {"generator_params": _params(*gen), "discriminator_params": _params(*disc),
                  "stand_ins": stubbed}


def check_losses(repo: str, recipe: str, audio: torch.Tensor, overrides: list, workdir: Path) -> float:
    """Our recipe's loss terms against the official training step's on the same batch and the same weights (the
    official model's random initialisation copied into ours: the generator through the checkpoint loader, the
    discriminators through :func:`~audiocodec.discriminators.load_official_discriminators`). Dropout off and
    the codebooks' EMA made a no-op (decay 1, every code counted 100 times), so that the official step's two
    generator passes and our one see the same weights. Prints each term and returns the largest relative
    difference of the two totals."""
    from audiocodec.codecs.interop.official import load_wavtokenizer_state
    from audiocodec.discriminators import load_official_discriminators
    model, _, _ = build_official(repo, audio.device)
    # the official WavTokenizer class builds its DAC discriminator twice: the loss reads the first
    # (``dacdiscriminator.discriminator``), the optimizer and the checkpoint's ``dac.*`` hold the second; give
    # the second the first's weights, so that ours gets the weights the official losses use
    model.dac.load_state_dict(model.dacdiscriminator.discriminator.state_dict())
    step, _ = ours(recipe, audio, "fp32", False, overrides, workdir)
    task = step.task
    load_official_discriminators(task.disc, model.state_dict())
    task.codec.load_state_dict(load_wavtokenizer_state(model.state_dict()).state_dict())
    for m in (model, task.codec, task.disc):
        for sub in m.modules():
            if isinstance(sub, nn.Dropout):
                sub.p = 0.0
            if hasattr(sub, "embed_avg") and hasattr(sub, "cluster_size"):   # both codebook classes
                sub.decay = 1.0
                sub.cluster_size.fill_(100.0)
                sub.embed_avg.copy_(sub.embed * 100.0)
    real = audio.unsqueeze(1)
    # official: the discriminator step, then the generator step (as Lightning calls them), logs kept
    theirs = {}
    with torch.no_grad():
        theirs["discriminator/total"] = float(model.training_step(audio, 0, 0))
        theirs.update({k: float(v) for k, v in model.logged.items()})
        model.logged.clear()
        theirs["generator/total"] = float(model.training_step(audio, 0, 1))
        theirs.update({k: float(v) for k, v in model.logged.items()})
        out = task.codec(real)
        fake = out.audio
        d_out = task.loss.discriminator_loss(real, fake, task.disc)
        g_out = task.loss.generator_loss(real, fake, task.disc, model_losses=out.losses)
    mine = {k: float(v) for k, v in {**d_out.terms, **g_out.terms}.items()}
    mine["generator/total"] = float(g_out.loss)
    pairs = [  # (official log, ours, our value's factor): the official sums DAC's 8 sub-discriminators
        ("discriminator/multi_period_loss", "discriminator/mpd", 1), ("discriminator/multi_res_loss",
                                                                       "discriminator/mrd", 1),
        ("discriminator/dac", "discriminator/dac", 8), ("discriminator/total", "discriminator/total", 1),
        ("generator/multi_period_loss", "adversarial/mpd", 1), ("generator/multi_res_loss", "adversarial/mrd", 1),
        ("generator/feature_matching_mp", "feature/mpd", 1), ("generator/feature_matching_mrd", "feature/mrd", 1),
        ("generator/loss_dac_1", "adversarial/dac", 8), ("generator/loss_dac_2", "feature/dac", 8),
        ("generator/mel_loss", "mel", 1), ("commit_loss", "commitment", 1), ("generator/total", "generator/total", 1)]
    print("| term (official name) | official | ours | relative difference |")
    print("|---|---|---|---|")
    worst = 0.0
    for theirs_key, mine_key, factor in pairs:
        a, b = theirs.get(theirs_key), mine.get(mine_key)
        if a is None or b is None:
            print(f"| {theirs_key} / {mine_key} | {a} | {b} | missing |")
            worst = float("inf") if theirs_key.endswith("total") else worst
            continue
        b *= factor
        rel = abs(a - b) / max(abs(a), 1e-12)
        if theirs_key.endswith("total"):
            worst = max(worst, rel)
        print(f"| {theirs_key} | {a:.6g} | {b:.6g} | {rel:.1e} |")
    return worst


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtypes", nargs="+", default=["bf16"], choices=["fp32", "bf16"])
    p.add_argument("--batch", type=int, default=40)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--recipe", default=str(ROOT / "recipes/codec/wavtokenizer_75.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of our recipe (repeatable)")
    p.add_argument("--wavtokenizer-repo", default=None, help="local copy of the official WavTokenizer code")
    p.add_argument("--only", choices=["ours", "official"], default=None)
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--profile", type=int, default=0, metavar="ROWS",
                   help="CUDA: after timing, profile two more steps of each trainer and print its top ROWS kernels")
    p.add_argument("--profile-ops", action="store_true", help="with --profile: also the top aten operators")
    p.add_argument("--fused-bias-act", action="store_true",
                   help="our discriminators' bias + LeakyReLU as one compiled kernel (Conv2dLeakyReLU.fused_cuda)")
    p.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE",
                   help="set a torch._inductor.config value for trainer.compile (repeatable), e.g. "
                        "keep_output_stride=False")
    p.add_argument("--check-losses", action="store_true",
                   help="with --wavtokenizer-repo: compare our loss terms with the official step's on one batch "
                        "(same weights) instead of timing")
    args = p.parse_args(argv)
    set_inductor_config(args.inductor)
    if args.fused_bias_act:
        from audiocodec.discriminators.common import Conv2dLeakyReLU
        Conv2dLeakyReLU.fused_cuda = True
    torch.manual_seed(0)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    n = int(args.seconds * 24000)
    t = torch.arange(n) / 24000
    f0 = 100 + 150 * torch.rand(args.batch, 1)
    audio = 0.3 * torch.sin(2 * np.pi * f0 * t) + 0.05 * torch.randn(args.batch, n)  # voiced-like + noise
    audio = audio.clamp(-1, 1).to(args.device)

    if args.check_losses:
        if not args.wavtokenizer_repo:
            raise SystemExit("--check-losses needs --wavtokenizer-repo")
        with tempfile.TemporaryDirectory() as tmp:
            worst = check_losses(args.wavtokenizer_repo, args.recipe, audio, args.overrides, Path(tmp))
        print(f"totals differ by at most {worst:.1e} (relative)")
        return 0 if worst < 1e-3 else 1

    candidates = {}
    if args.only in (None, "ours"):
        candidates["ours"] = lambda dtype, tmp: ours(args.recipe, audio, dtype, args.tf32, args.overrides, tmp)
    if args.wavtokenizer_repo and args.only in (None, "official"):
        candidates["wavtokenizer-75 (official)"] = lambda dtype, tmp: official(args.wavtokenizer_repo, audio, dtype)

    print(f"device={args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}) "
          f"batch={args.batch} x {args.seconds} s torch={torch.__version__} tf32={args.tf32} "
          f"warmup={args.warmup} steps={args.steps}")
    print("| trainer | dtype | steps/s | s of audio / s | peak GB | G params | D params |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for dtype in args.dtypes:
        for label, make in candidates.items():
            torch.backends.cuda.matmul.allow_tf32 = args.tf32
            torch.backends.cudnn.allow_tf32 = args.tf32
            if args.device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            with tempfile.TemporaryDirectory() as tmp:
                step, info = make(dtype, Path(tmp))
                rate = time_steps(step, args.device, args.warmup, args.steps)
                if args.profile and args.device == "cuda":
                    print_profile(lambda: (step(), step()), f"{label} {dtype} (per optimizer step)", steps=2,
                                  rows=args.profile, by_op=args.profile_ops)
                del step
            peak = torch.cuda.max_memory_allocated() / 1e9 if args.device == "cuda" else float("nan")
            row = dict(trainer=label, dtype=dtype, steps_per_s=rate, audio_s_per_s=rate * args.batch * args.seconds,
                       peak_gb=peak, **info)
            rows.append(row)
            print(f"| {label} | {dtype} | {rate:.3f} | {row['audio_s_per_s']:.1f} | {peak:.1f} | "
                  f"{info['generator_params'] / 1e6:.1f}M | {info['discriminator_params'] / 1e6:.1f}M |", flush=True)
    for dtype in args.dtypes:
        r = {x["trainer"]: x["steps_per_s"] for x in rows if x["dtype"] == dtype}
        if len(r) == 2:
            print(f"{dtype}: ours / official = {r['ours'] / r['wavtokenizer-75 (official)']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(args=vars(args), rows=rows), indent=1))


if __name__ == "__main__":
    sys.exit(main())
