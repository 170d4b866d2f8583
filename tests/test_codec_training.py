"""The ``codec_gan`` task: a tiny codec learns, resumes exactly, trains on two processes, fine-tunes official
WavTokenizer weights; the recipes are valid configs and ``egs/mini/codec/run.sh`` runs end to end.

Models are shrunk through ``codec_overrides`` and tiny discriminators so the file runs in about a minute on CPU.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml
from safetensors.torch import load_file

from audiocodec.errors import ConfigError
from audiocodec.train import Trainer, load_checkpoint
from audiocodec.train import checkpoint as ckpt
from helpers import run_recipe, seed_euclidean_rvq, synth_audio

ROOT = Path(__file__).resolve().parents[1]
SR = 24000

#: wavtokenizer-75 structure (SEANet -> one EMA VQ -> Vocos backbone with attention -> ISTFT), 0.6M parameters
TINY_WT = {"encoder": {"n_filters": 8, "dimension": 32, "lstm": 1},
           "quantizer": {"dim": 32, "codebook_size": 16, "kmeans_iters": 5},
           "decoder": {"backbone": {"input_channels": 32, "dim": 64, "intermediate_dim": 128, "num_layers": 2},
                       "head": {"dim": 64}}}
TINY_WT_DISC = [{"type": "mpd", "name": "mpd", "periods": [2, 3], "channels": [4, 8, 16, 16, 16]},
                {"type": "mrd", "name": "mrd", "channels": 4, "resolutions": [[512, 128, 512]]}]
#: encodec-24k structure with RVQ of 4 codebooks and quantizer dropout, 0.17M parameters
TINY_ENC = {"num_codebooks": 2, "encoder": {"n_filters": 4, "dimension": 16, "lstm": 1},
            "decoder": {"n_filters": 4, "dimension": 16, "lstm": 1},
            "quantizer": {"dim": 16, "num_quantizers": 4, "codebook_size": 16, "kmeans_iters": 3,
                          "quantizer_dropout": 1.0}}
TINY_ENC_DISC = [{"type": "msstft", "name": "msstft", "filters": 4, "n_ffts": [256, 128], "max_filters": 16}]
TRAINER = {"log_every": 1, "val_every": 0, "ckpt_every": 1000, "threads": 1, "progress": False, "device": "cpu"}


def write_clips(folder: Path, durations, name: str = "train") -> Path:
    """Synthetic clips (chirps, harmonics, noise bursts) and their manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, d in enumerate(durations):
        path = folder / f"{name}_{i}.wav"
        sf.write(path, synth_audio(d, seed=i + 1)[0, 0].numpy(), SR)
        lines.append(json.dumps({"id": path.stem, "path": path.name, "duration": d, "sample_rate": SR}))
    manifest = folder / f"{name}.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def wavtokenizer_config(train: Path, valid=None, **trainer) -> dict:
    return {"task": {"type": "codec_gan", "codec": "wavtokenizer-75", "codec_overrides": copy.deepcopy(TINY_WT),
                     "loss": {"preset": "wavtokenizer", "discriminators": copy.deepcopy(TINY_WT_DISC)},
                     "data": {"train": str(train), "valid": str(valid) if valid else None, "crop_seconds": 0.5},
                     "valid_metrics": ["pesq"]},
            "trainer": {**TRAINER, "batch_size": 1, **trainer},
            "optim": {"gen": {"lr": 3e-3}, "disc": {"lr": 2e-4}}}


def encodec_config(train: Path, **trainer) -> dict:
    return {"task": {"type": "codec_gan", "codec": "encodec-24k", "codec_overrides": copy.deepcopy(TINY_ENC),
                     "loss": {"preset": "encodec", "discriminators": copy.deepcopy(TINY_ENC_DISC)},
                     "data": {"train": str(train), "valid": str(train), "crop_seconds": 0.3, "peak_db": [-6, -1]},
                     "valid_metrics": [], "pretrain_mel_steps": 2},
            "trainer": {**TRAINER, "batch_size": 2, **trainer},
            "optim": {"gen": {"lr": 3e-4, "betas": [0.5, 0.9]}, "disc": {"lr": 3e-4, "betas": [0.5, 0.9]}}}


def assert_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_tiny_codec_halves_its_mel_loss_on_one_clip(tmp_path):
    train = write_clips(tmp_path / "data", [0.5])
    steps = 250
    config = wavtokenizer_config(train, valid=train, max_steps=steps, val_every=steps, ckpt_every=steps)
    config["task"]["pretrain_mel_steps"] = 100   # reconstruction only, then the GAN
    start = time.time()
    trainer = Trainer(config, tmp_path / "run")
    trainer.fit()
    seconds = time.time() - start
    mel = [h["gen/mel"] for h in trainer.history if "gen/mel" in h]
    ratio = mel[-1] / mel[0]
    print(f"mel loss {mel[0]:.3f} -> {mel[-1]:.3f} (ratio {ratio:.3f}) in {seconds:.1f} s")
    assert len(mel) == steps and ratio <= 0.5 and seconds < 60
    logged = trainer.history[-2]
    for key in ("discriminator/mpd", "gen/adversarial/mrd", "gen/feature/mpd", "gen/commitment", "lr/gen",
                "grad_norm/gen", "grad_norm/disc", "codebook/utilisation", "codebook/perplexity",
                "codebook/ema_dead_codes"):
        assert key in logged, key
    assert "discriminator/mpd" not in trainer.history[50] and "gen/adversarial/mpd" not in trainer.history[50]
    val = trainer.history[-1]
    assert val["val/mel"] < mel[0] and 1.0 <= val["val/pesq"] <= 4.7
    assert list((tmp_path / "run" / "tensorboard").glob("events.*"))
    # the generator is exported with each checkpoint and the CLI reconstructs with it directly
    from audiocodec.cli import main as cli_main
    out = tmp_path / "out"
    assert cli_main(["reconstruct", str(train.parent / "train_0.wav"), "-o", str(out), "--model",
                     str(tmp_path / "run" / "codec"), "--device", "cpu", "--quiet"]) == 0
    assert sf.info(str(out / "train_0.wav")).frames == int(0.5 * SR)


def test_resume_gives_identical_weights(tmp_path):
    """EnCodec structure: RVQ with quantizer dropout, balancer, peak normalisation, gradient accumulation,
    validation between the steps; 6 steps straight vs 3 + resume to 6."""
    train = write_clips(tmp_path / "data", [0.5, 0.7, 0.9])
    config = encodec_config(train, max_steps=6, ckpt_every=3, val_every=3, grad_accum=2, batch_size=1)
    Trainer(config, tmp_path / "a").fit()
    Trainer(config, tmp_path / "b").fit(until_step=3)
    resumed = Trainer(config, tmp_path / "b")
    assert resumed.step == 3
    resumed.fit()
    last = ckpt.checkpoint_name(6)
    a = load_file(str(tmp_path / "a" / "checkpoints" / last / ckpt.MODEL_FILE))
    b = load_file(str(tmp_path / "b" / "checkpoints" / last / ckpt.MODEL_FILE))
    assert_identical(a, b)
    assert any(k.startswith("disc.") for k in a) and any(k.endswith("codebook.embed") for k in a)
    _, state_a, _ = load_checkpoint(tmp_path / "a" / "checkpoints" / last)
    _, state_b, _ = load_checkpoint(tmp_path / "b" / "checkpoints" / last)
    assert state_a["task"] == state_b["task"] and state_a["task"]["loss"]["balancer"]["ema"]
    assert_identical(load_file(str(tmp_path / "a" / "codec" / "model.safetensors")),
                     load_file(str(tmp_path / "b" / "codec" / "model.safetensors")))


DDP_SCRIPT = """
import sys, yaml
from safetensors.torch import save_file
from audiocodec.train import Trainer
trainer = Trainer(yaml.safe_load(open(sys.argv[1])), sys.argv[2])
trainer.fit()
state = {f"{n}.{k}": v.detach().contiguous() for n, m in trainer.task.modules.items()
         for k, v in m.state_dict().items()}
save_file(state, f"{sys.argv[2]}/final_rank{trainer.dist.rank}.safetensors")
"""


def test_torchrun_two_processes(tmp_path):
    """2 ranks (gloo): quantizer dropout, k-means init, EMA codebooks and the balancer stay in step."""
    train = write_clips(tmp_path / "data", [0.5, 0.6, 0.7, 0.8])
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(encodec_config(train, max_steps=3, batch_size=1)))
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(config), str(run)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    r0, r1 = load_file(str(run / "final_rank0.safetensors")), load_file(str(run / "final_rank1.safetensors"))
    assert_identical(r0, r1)
    _, state, _ = load_checkpoint(run / "checkpoints" / ckpt.checkpoint_name(3))
    assert state["world_size"] == 2
    assert (run / "codec" / "model.safetensors").is_file()


def test_init_from_official_wavtokenizer_checkpoint(tmp_path):
    from audiocodec import build_codec, load_codec
    from test_wavtokenizer_interop import perturb, to_official_state

    torch.manual_seed(0)
    source = build_codec("wavtokenizer-75", **TINY_WT).eval()
    perturb(source, 0)
    seed_euclidean_rvq(source.encoder, source.quantizer.layers, synth_audio(0.6, batch=2, seed=7))
    path = tmp_path / "wavtokenizer_tiny.ckpt"
    torch.save({"global_step": 1000, "state_dict": to_official_state(source)}, path)
    train = write_clips(tmp_path / "data", [0.5])
    config = wavtokenizer_config(train, max_steps=1)
    config["task"].update(codec=None, init_from=str(path), codec_overrides={"decoder": {"backbone": {"dropout": 0.0}}})
    trainer = Trainer(config, tmp_path / "run")
    codec = trainer.task.codec
    loaded = load_codec(path, inference=False)
    assert_identical(codec.state_dict(), loaded.state_dict())
    assert any(n.endswith("parametrizations.weight.original0") for n, _ in codec.named_parameters())  # weight norm
    trainer.fit()
    real, fake = trainer.task._last
    with torch.no_grad():
        expected = loaded.eval()(real).audio
    torch.testing.assert_close(fake, expected, rtol=1e-4, atol=1e-5)   # the first step starts from the weights
    assert not torch.equal(codec.encoder.state_dict()[next(iter(codec.encoder.state_dict()))],
                           loaded.encoder.state_dict()[next(iter(loaded.encoder.state_dict()))])
    # trainer.init_from (--init-from) loads the same weights into a configured codec
    config["task"].update(codec="wavtokenizer-75", codec_overrides=copy.deepcopy(TINY_WT), init_from=None)
    again = Trainer(config, tmp_path / "run3", overrides=[f"trainer.init_from={path}"])
    assert_identical(again.task.codec.state_dict(), loaded.state_dict())
    again.fit(until_step=0)  # (releases the log files; trains nothing)
    # a config that does not fit the checkpoint is refused with the reason
    config["task"].update(init_from=str(path))
    config["task"]["codec_overrides"]["quantizer"]["codebook_size"] = 32
    with pytest.raises(Exception, match="do not fit"):
        Trainer(config, tmp_path / "run2", overrides=["trainer.resume=never"])


def test_freeze_encoder_and_quantizer_keeps_the_tokens(tmp_path):
    """Decoder-only fine-tuning (trainer.freeze): encoder and codebook stay bit-identical (no gradient, and
    the EMA codebook does not move because the quantizer stays in eval mode), so a model trained on the
    codec's tokens still fits; the decoder does change. Unknown names are refused with the choices."""
    train = write_clips(tmp_path / "data", [0.5, 0.7])
    config = wavtokenizer_config(train, max_steps=3)
    Trainer(config, tmp_path / "base").fit()
    base = tmp_path / "base" / "codec"
    tuned = Trainer(config, tmp_path / "tuned", overrides=[f"trainer.init_from={base}",
                                                           "trainer.freeze=[codec.encoder, codec.quantizer]"])
    codec = tuned.task.codec
    optimized = {id(p) for group in tuned.optimizers["gen"].param_groups for p in group["params"]}
    assert {n.split(".")[0] for n, p in codec.named_parameters() if id(p) in optimized} == {"decoder"}
    before = {k: v.clone() for k, v in codec.state_dict().items()}
    tuned.fit()
    after = codec.state_dict()
    for k in before:
        if k.startswith(("encoder", "quantizer")):
            assert torch.equal(before[k], after[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder"))
    assert tuned.task.codec.quantizer.training is False and tuned.task.codec.decoder.training is True
    # the tokens of the fine-tuned codec are those of the base codec
    from audiocodec import load_codec
    audio = synth_audio(0.6, seed=3)
    with torch.no_grad():
        a = load_codec(base).encode(audio, SR)
        b = load_codec(tmp_path / "tuned" / "codec").encode(audio, SR)
    assert torch.equal(a.tokens, b.tokens) and a.fingerprint == b.fingerprint
    for bad, hint in (("codec.encodr", "submodules: codec.encoder"), ("gen.encoder", "modules: codec, disc")):
        with pytest.raises(ConfigError, match=hint):
            Trainer(config, tmp_path / "bad", overrides=[f"trainer.freeze=[{bad}]"])


def test_recipes_are_valid_configs():
    import inspect

    from audiocodec.codecs.registry import build_from_config
    from audiocodec.config import call_with_config, load_yaml
    from audiocodec.discriminators import DISCRIMINATORS
    from audiocodec.losses import CodecLoss
    from audiocodec.train import TASKS, resolve_config
    from audiocodec.train.codec_task import resolve_loss
    from audiocodec.train.optim import optim_config

    recipes = sorted((ROOT / "recipes" / "codec").glob("*.yaml"))
    assert {p.stem for p in recipes} >= {"wavtokenizer_75", "wavtokenizer_40", "wavtokenizer_75_small", "encodec_24k",
                                         "dac_24k"}
    for path in recipes:
        cfg = resolve_config(load_yaml(path))
        task = TASKS.build(cfg["task"], "task")          # unknown task keys raise here
        codec_config = task._codec_config(None)
        discriminators, loss_args = resolve_loss(task.loss_spec, codec_config["sample_rate"])
        call_with_config(CodecLoss, loss_args, "loss")
        for spec in discriminators:
            spec = {k: v for k, v in spec.items() if k != "name"}
            params = inspect.signature(DISCRIMINATORS._items[spec.pop("type")]).parameters
            assert set(spec) <= set(params), (path.name, spec)
        assert set(cfg["optim"]) == {"gen", "disc"}, path.name
        for name, section in cfg["optim"].items():
            optim_config(name, section)
    small = resolve_config(load_yaml(ROOT / "recipes" / "codec" / "wavtokenizer_75_small.yaml"))
    codec = build_from_config(TASKS.build(small["task"], "task")._codec_config(None))
    stored = sum(v.numel() for v in codec.state_dict().values())
    assert codec.num_parameters() < 20e6 and stored * 2 < 40e6
    with pytest.raises(ConfigError, match="bogus"):
        TASKS.build(resolve_config(load_yaml(recipes[0]), ["task.bogus=1"])["task"], "task")
    with pytest.raises(ConfigError, match="crop"):
        TASKS.build(resolve_config(load_yaml(recipes[0]), ["task.data.crop=1"])["task"], "task")


def test_mini_recipe_runs_end_to_end(tmp_path):
    from audiocodec.data.synth import missing_tools
    missing = missing_tools()
    if missing:
        pytest.skip(f"the mini corpus needs {' '.join(missing)} (apt-get install espeak-ng fluidsynth "
                    "fluid-soundfont-gm, or egs/mini/local/install_tools.sh)")
    overrides = [
        "task.codec_overrides=" + json.dumps(TINY_WT),
        "task.loss.discriminators=" + json.dumps(TINY_WT_DISC),
        "task.data.crop_seconds=0.5", "task.data.valid_clips=2", "task.valid_metrics=[]",
        "trainer.max_steps=4", "trainer.batch_size=2", "trainer.num_workers=0", "trainer.precision=fp32",
        "trainer.log_every=2", "trainer.val_every=4", "trainer.ckpt_every=4", "trainer.progress=false",
        "trainer.threads=1",
    ]
    run_recipe(ROOT / "egs" / "mini" / "codec" / "run.sh",
               ["--scale", "toy", "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"),
                "--metrics", "pesq,stoi,mel_distance"], overrides, timeout=300)
    metrics = json.loads((tmp_path / "exp" / "decode" / "metrics.json").read_text())
    assert {"pesq", "stoi", "mel_distance"} <= set(metrics["summary"])
    assert len(list((tmp_path / "exp" / "decode" / "test").glob("*.wav"))) == len(
        (tmp_path / "data" / "test.jsonl").read_text().splitlines())


def test_compiled_decoder_and_discriminators_train(tmp_path):
    """trainer.compile on the codec GAN: the Vocos decoder (its irfft kept out of the graph: inductor miscompiles
    its backward) and the discriminators run compiled through forward and backward, and the mel loss falls."""
    train = write_clips(tmp_path / "data", [0.5])
    config = wavtokenizer_config(train, max_steps=4, val_every=0, ckpt_every=100)
    config["task"]["valid_metrics"] = []
    trainer = Trainer(config, tmp_path / "run", overrides=["trainer.compile=[codec.decoder, disc]"])
    assert trainer.task.codec.decoder._compiled_call_impl is not None
    trainer.fit()
    mel = [h["gen/mel"] for h in trainer.history if "gen/mel" in h]
    assert len(mel) == 4 and mel[-1] < mel[0]
    assert "discriminator/mpd" in trainer.history[-1]


def test_channels_last_discriminators_train_as_the_default_layout(tmp_path):
    """trainer.channels_last=[disc]: every discriminator Conv2d gets and gives NHWC tensors (the one-channel MPD /
    MRD inputs included), and the run's losses equal the NCHW run's up to float rounding; a name that is no
    module is a ConfigError."""
    train = write_clips(tmp_path / "data", [0.5])
    config = wavtokenizer_config(train, max_steps=3, val_every=0, ckpt_every=100)
    config["task"]["valid_metrics"] = []
    plain = Trainer(copy.deepcopy(config), tmp_path / "plain")
    plain.fit()
    nhwc = Trainer(copy.deepcopy(config), tmp_path / "nhwc", overrides=["trainer.channels_last=[disc]"])
    layouts = []
    convs = [m for m in nhwc.task.disc.modules() if isinstance(m, torch.nn.Conv2d)]
    for conv in convs:
        conv.register_forward_hook(lambda m, args, out: layouts.append(
            (args[0].is_contiguous(memory_format=torch.channels_last) and args[0].stride(1) == 1,
             out.is_contiguous(memory_format=torch.channels_last) and out.stride(1) == 1)))
    nhwc.fit()
    assert len(layouts) >= 3 * 2 * len(convs) and all(a and b for a, b in layouts)
    for key in ("gen/mel", "discriminator/mpd", "gen/feature/mrd"):
        a = [h[key] for h in plain.history if key in h]
        b = [h[key] for h in nhwc.history if key in h]
        assert len(a) == len(b) == 3
        assert a == pytest.approx(b, rel=1e-3, abs=1e-5), key
    with pytest.raises(ConfigError, match="trainer.channels_last"):
        Trainer(copy.deepcopy(config), tmp_path / "bad", overrides=["trainer.channels_last=[disc.nothing]"])
