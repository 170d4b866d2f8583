"""Semantic distillation through the trainer (``codec_gan`` with ``task.distillation``): a tiny SpeechTokenizer-style
codec learns from a speech teacher's cached features, a language teacher's cached features, and both (one of them
live); crops read the right frames; bad configs are named; the feature CLI; ``egs/mini/semantic_codec/run.sh``
end to end at toy scale with random tiny teachers."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiocodec.errors import ConfigError
from audiocodec.train import Trainer
from helpers import run_recipe, synth_audio

transformers = pytest.importorskip("transformers")
from audiocodec.semantic import FeatureCache, SpeechTeacher, build_teacher, char_vocab  # noqa: E402
from audiocodec.semantic.cli import main as semantic_cli  # noqa: E402

pytestmark = pytest.mark.usefixtures("native_cpu_convs")

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
HUBERT = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=[8] * 7,
              num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
BERT = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=128)
TEXTS = ["the cat sat on the mat", "a dog ran in the park", "she sells sea shells", "one two three four five"]
#: the speechtokenizer structure (BiLSTM SEANet encoder, EMA RVQ with a semantic head), 3 codebooks, tiny
TINY_ST = {"num_codebooks": 3, "encoder": {"n_filters": 4, "dimension": 32, "lstm": 1},
           "decoder": {"n_filters": 4, "dimension": 32, "lstm": 1},
           "quantizer": {"dim": 32, "num_quantizers": 3, "codebook_size": 32, "kmeans_iters": 4, "semantic_dim": 16}}
LOSS = {"weights": {"mel": 45, "l1": 500, "commitment": 10, "distillation": 120},
        "mel": {"resolutions": [{"n_fft": 512, "hop_length": 120, "n_mels": 40}]}}
#: the recipes' discriminators (MPD, MSD, MS-STFT), tiny
TINY_DISCS = [{"type": "mpd", "name": "mpd", "periods": [2, 3], "channels": [4, 8, 16, 16, 16]},
              {"type": "msd", "name": "msd", "scales": 1, "norms": ["weight_norm"], "channels": [4, 8, 8, 8, 8, 8, 8],
               "groups": [1, 2, 4, 4, 4, 4, 1]},
              {"type": "msstft", "name": "msstft", "filters": 4, "n_ffts": [256, 128], "max_filters": 16}]
TRAINER = {"log_every": 1, "val_every": 0, "ckpt_every": 1000, "threads": 1, "progress": False, "device": "cpu",
           "batch_size": 2}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Four 0.7 s clips with transcripts (crops of 0.5 s start at varied offsets) and a fifth without."""
    root = tmp_path_factory.mktemp("corpus")
    lines = []
    for i in range(5):
        sf.write(root / f"utt{i}.wav", synth_audio(0.7, SR, seed=20 + i)[0, 0].numpy(), SR)
        rec = {"id": f"spk_utt{i}", "path": f"utt{i}.wav", "duration": 0.7, "sample_rate": SR}
        if i < 4:
            rec["text"] = TEXTS[i]
        lines.append(json.dumps(rec))
    (root / "all.jsonl").write_text("\n".join(lines) + "\n")
    (root / "train.jsonl").write_text("\n".join(lines[:4]) + "\n")
    return root


def cli_features(corpus: Path, out: Path, teacher: str, config: dict, *extra: str, manifest="train.jsonl") -> int:
    return semantic_cli(["features", str(corpus / manifest), str(out), "--teacher", teacher,
                         "--teacher-config", json.dumps(config), "--seed", "0", "--device", "cpu", "--quiet",
                         "--shard-size", "3", *extra])


@pytest.fixture(scope="module")
def caches(corpus, tmp_path_factory):
    """Speech (tiny random HuBERT, mean of all layers) and text (tiny random BERT, char vocabulary) caches."""
    root = tmp_path_factory.mktemp("feats")
    assert cli_features(corpus, root / "speech", "speech", HUBERT) == 0
    assert cli_features(corpus, root / "text", "text", BERT) == 0
    return root


def config(corpus: Path, distillation: dict, steps: int = 40, codec_overrides=None, **task) -> dict:
    return {"task": {"type": "codec_gan", "codec": "speechtokenizer",
                     "codec_overrides": copy.deepcopy(codec_overrides or TINY_ST), "loss": copy.deepcopy(LOSS),
                     "data": {"train": str(corpus / "train.jsonl"), "valid": None, "crop_seconds": 0.5},
                     "valid_metrics": [], "distillation": distillation, **task},
            "trainer": {**TRAINER, "max_steps": steps}, "optim": {"gen": {"lr": 3e-3, "betas": [0.9, 0.99]}}}


def distillation_history(trainer, teacher: str) -> list:
    return [h[f"gen/distillation/{teacher}"] for h in trainer.history if f"gen/distillation/{teacher}" in h]


def assert_falls(history: list, margin: float = 0.05):
    first, last = np.mean(history[:5]), np.mean(history[-5:])
    assert last < first - margin, (first, last, history)


def test_sm_guided_from_the_cache_learns_and_validates(corpus, caches, tmp_path):
    """SpeechTokenizer: cached HuBERT features of each crop -> RVQ layer 0; validation reports the loss too."""
    cfg = config(corpus, {"preset": "speechtokenizer", "features": {"speech": str(caches / "speech")}})
    cfg["task"]["data"]["valid"] = str(corpus / "train.jsonl")
    cfg["trainer"].update(val_every=40)
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.fit()
    history = distillation_history(trainer, "speech")
    assert len(history) == 40 and all(math.isfinite(v) for v in history)
    assert_falls(history)
    logged = trainer.history[-2]
    for key in ("gen/distillation", "gen/mel", "gen/commitment", "codebook/perplexity"):
        assert key in logged, key
    assert logged["gen/distillation"] == pytest.approx(logged["gen/distillation/speech"], rel=1e-5)
    val = trainer.history[-1]
    assert val["val/distillation"] < history[0] and math.isfinite(val["val/mel"])
    assert (tmp_path / "run" / "codec" / "model.safetensors").is_file()
    # the fall is the distillation's doing: with weight 0 (computed, not trained) the loss stays where it was
    cfg = config(corpus, {"preset": "speechtokenizer", "features": {"speech": str(caches / "speech")}})
    cfg["task"]["loss"]["weights"]["distillation"] = 0
    control = Trainer(cfg, tmp_path / "control")
    control.fit()
    untrained = distillation_history(control, "speech")
    assert np.mean(untrained[-5:]) > np.mean(history[-5:]) + 0.1, (untrained, history)


def test_lm_guided_from_the_cache_learns(corpus, caches, tmp_path):
    """DM-Codec LM-guided: cached BERT states of the transcript (one position per frame), cropped with the audio."""
    trainer = Trainer(config(corpus, {"preset": "dm_codec_lm", "features": {"text": str(caches / "text")}}),
                      tmp_path / "run")
    trainer.fit()
    assert_falls(distillation_history(trainer, "text"))


def test_combined_with_a_live_teacher_routing_and_quantizer_dropout(corpus, caches, tmp_path):
    """DM-Codec combined: a live speech teacher on RVQ layer 0 and cached text features on layer 1, one head each;
    quantizer dropout never draws fewer than the 2 codebooks the routes need."""
    overrides = copy.deepcopy(TINY_ST)
    overrides["quantizer"]["semantic_dim"] = {"speech": 16, "text": 16}
    distill = {"teachers": {"speech": {"layer": 0}, "text": {"layer": 1}}, "combine": "mean",
               "features": {"text": str(caches / "text")},
               "live": {"speech": {"config": HUBERT, "seed": 0}}}
    trainer = Trainer(config(corpus, distill, codec_overrides=overrides, quantizer_dropout=1.0), tmp_path / "run")
    assert trainer.task.nq_choices == [2, 3]
    trainer.fit()
    for name in ("speech", "text"):
        assert_falls(distillation_history(trainer, name), margin=0.03)
    used = [h["codebook/num_codebooks"] for h in trainer.history if "codebook/num_codebooks" in h]
    assert min(used) == 2 and max(used) == 3
    both = [h for h in trainer.history if "gen/distillation" in h]
    for h in both[:3]:   # the mean of the two teachers' losses
        assert h["gen/distillation"] == pytest.approx((h["gen/distillation/speech"] + h["gen/distillation/text"]) / 2,
                                                      rel=1e-5)


def test_crops_read_their_own_frames(corpus, caches, tmp_path):
    """The collated features of each crop are the cached clip's frames from the crop's offset; the live speech
    teacher gives the features of the crop itself."""
    trainer = Trainer(config(corpus, {"preset": "dm_codec", "features": {"speech": str(caches / "speech"),
                                                                         "text": str(caches / "text")}}),
                      tmp_path / "run")
    task, ds = trainer.task, trainer.train_ds
    items = [ds[(i, epoch)] for epoch in range(3) for i in range(4)]
    batch = task.collate(items)
    offsets = batch["offset"].tolist()
    assert batch["offset"].dtype == torch.float64 and len(set(offsets)) > 3 and max(offsets) > 0.05
    speech, text = FeatureCache(caches / "speech"), FeatureCache(caches / "text")
    assert batch["semantic"]["speech"].features.shape == (12, 25, 16)          # 0.5 s at 50 Hz
    for b, (rid, off) in enumerate(zip(batch["id"], offsets)):
        for name, cache in (("speech", speech), ("text", text)):
            expected = cache.crop(rid, off, 25)
            got = batch["semantic"][name]
            assert int(got.lengths[b]) == expected.shape[0]
            assert torch.equal(got.features[b, : expected.shape[0]], expected), (name, rid, off)
        audio, _ = sf.read(corpus / f"utt{rid[-1]}.wav", dtype="float32")
        start = int(round(off * SR))
        assert torch.allclose(batch["audio"][b, 0], torch.from_numpy(audio[start:start + 8000]))
    # a live text teacher crops the clip's features as the cache does
    teacher = build_teacher("text", {"config": BERT, "seed": 0}, frame_rate=50)
    task._texts = {f"spk_utt{i}": (TEXTS[i], 0.7) for i in range(4)}
    live = task._text_targets(teacher, batch["id"], batch["offset"], 25, torch.device("cpu"))
    assert torch.allclose(live.features, batch["semantic"]["text"].features, atol=2e-3)   # (cache: float16)
    assert torch.equal(live.lengths, batch["semantic"]["text"].lengths)
    trainer.fit(until_step=0)


def test_bad_configs_are_named(corpus, caches, tmp_path):
    speech = str(caches / "speech")

    def build(distill, **task):
        cfg = config(corpus, distill, steps=1)
        for key, value in task.items():
            cfg["task"][key] = value
        return Trainer(cfg, tmp_path / f"run{len(list(tmp_path.iterdir()))}")

    with pytest.raises(ConfigError, match="task.distillation.featurs"):
        build({"preset": "speechtokenizer", "featurs": {"speech": speech}})
    with pytest.raises(ConfigError, match="needs a preset"):
        build({"features": {"speech": speech}})
    with pytest.raises(ConfigError, match="'text' is not a teacher"):
        build({"preset": "speechtokenizer", "features": {"speech": speech, "text": speech}})
    with pytest.raises(ConfigError, match="no targets for teacher"):
        build({"preset": "dm_codec", "features": {"speech": speech}})
    with pytest.raises(ConfigError, match="missing must be"):
        build({"preset": "speechtokenizer", "features": {"speech": speech}, "missing": "skip"})
    with pytest.raises(ConfigError, match="live.speech: unknown key"):
        build({"preset": "speechtokenizer", "live": {"speech": {"config": HUBERT, "layers": 1}}})
    with pytest.raises(ConfigError, match="no `distillation` weight"):
        build({"preset": "speechtokenizer", "features": {"speech": speech}},
              loss={**LOSS, "weights": {"mel": 45, "commitment": 10}})
    with pytest.raises(ConfigError, match="no task.distillation"):
        build(None)
    # a recipe's distillation switched off (`--set task.distillation=null --set task.loss.weights.distillation=0`)
    off = build(None, loss={**LOSS, "weights": {**LOSS["weights"], "distillation": 0}})
    off.fit()
    assert off.history and not any(k.startswith("gen/distillation") for h in off.history for k in h)
    with pytest.raises(ConfigError, match="no semantic head"):
        build({"preset": "speechtokenizer", "features": {"speech": speech}}, codec="encodec-24k",
              codec_overrides={"num_codebooks": 2, "encoder": {"n_filters": 4, "dimension": 16, "lstm": 1},
                               "decoder": {"n_filters": 4, "dimension": 16, "lstm": 1},
                               "quantizer": {"dim": 16, "num_quantizers": 2, "codebook_size": 16}})
    wrong_dim = copy.deepcopy(TINY_ST)
    wrong_dim["quantizer"]["semantic_dim"] = 8
    with pytest.raises(ConfigError, match="features of size 16.*outputs 8"):
        build({"preset": "speechtokenizer", "features": {"speech": speech}}, codec_overrides=wrong_dim)
    with pytest.raises(ConfigError, match="train with at least 3 codebooks"):
        build({"teachers": {"speech": {"layer": 2}}, "features": {"speech": speech}}, train_codebooks=2)
    with pytest.raises(ConfigError, match="not a feature cache"):
        build({"preset": "speechtokenizer", "features": {"speech": str(tmp_path)}})
    # features at another frame rate
    assert cli_features(corpus, tmp_path / "speech25", "speech", HUBERT, "--frame-rate", "25") == 0
    with pytest.raises(ConfigError, match="25.0 frames/s.*--frame-rate 50"):
        build({"preset": "speechtokenizer", "features": {"speech": str(tmp_path / "speech25")}})
    # a clip without features: an error that says what to do, or left out with missing: drop
    all_clips = str(corpus / "all.jsonl")
    with pytest.raises(ConfigError, match="1 of 5 training clips have no distillation targets.*spk_utt4.*missing=drop"):
        build({"preset": "speechtokenizer", "features": {"speech": speech}},
              data={"train": all_clips, "crop_seconds": 0.5})
    trainer = build({"preset": "speechtokenizer", "features": {"speech": speech}, "missing": "drop"},
                    data={"train": all_clips, "valid": all_clips, "crop_seconds": 0.5})
    assert len(trainer.train_ds) == 4 and len(trainer.val_ds) == 4 and trainer.task._val_distill
    trainer.fit(until_step=0)
    # a live text teacher needs transcripts
    with pytest.raises(ConfigError, match="spk_utt4.*no text transcript"):
        build({"preset": "dm_codec_lm", "live": {"text": {"config": BERT}}}, data={"train": all_clips})


def test_feature_cli(corpus, tmp_path, capsys):
    # transcribed: the clips with a transcript
    out = tmp_path / "text.jsonl"
    assert semantic_cli(["transcribed", str(corpus / "all.jsonl"), str(out)]) == 0
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in kept] == [f"spk_utt{i}" for i in range(4)]
    assert (out.parent / kept[0]["path"]).is_file()
    # the CLI's teacher is the one build_teacher makes: same features as the library call
    assert cli_features(corpus, tmp_path / "sm", "speech", HUBERT, "--layer", "1", "--dtype", "float32") == 0
    teacher = SpeechTeacher.from_config(HUBERT, layer=1, seed=0)
    expected = teacher.extract([{"path": str(corpus / "utt2.wav"), "duration": 0.7}])[0]
    assert torch.equal(FeatureCache(tmp_path / "sm")["spk_utt2"], expected)
    # a text teacher on clips without transcript: those fail (exit 1, listed), the others are cached
    assert cli_features(corpus, tmp_path / "lm", "text", BERT, manifest="all.jsonl") == 1
    failed = [json.loads(line) for line in (tmp_path / "lm" / "failed.jsonl").read_text().splitlines()]
    assert [f["id"] for f in failed] == ["spk_utt4"] and len(FeatureCache(tmp_path / "lm")) == 4
    # the default character vocabulary tokenizes lower-case text into known pieces
    tok = build_teacher("text", {"config": BERT}).tokenizer
    ids = tok("The cat sat.")["input_ids"]
    assert tok.unk_token_id not in ids and len(tok) == len(char_vocab())
    # errors: exit status 2 and a message
    assert cli_features(corpus, tmp_path / "bad", "speech", {"hidden_size": 16, "num_hidden_layers": 2},
                        "--vocab", "v.txt") == 2
    assert "--tokenizer / --vocab" in capsys.readouterr().err
    assert semantic_cli(["features", str(corpus / "train.jsonl"), str(tmp_path / "bad"), "--teacher", "speech",
                         "--teacher-config", "{not json"]) == 2
    assert "not a JSON object" in capsys.readouterr().err
    assert semantic_cli(["features", str(corpus / "train.jsonl"), str(tmp_path / "bad"), "--teacher", "speech",
                         "--teacher-path", str(tmp_path / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_mini_semantic_recipe_runs_end_to_end(tmp_path):
    from audiocodec.data.synth import missing_tools
    missing = missing_tools()
    if missing:
        pytest.skip(f"the mini corpus needs {' '.join(missing)} (egs/mini/local/install_tools.sh)")
    overrides = [
        "task.codec_overrides=" + json.dumps(TINY_ST),
        "task.loss.discriminators=" + json.dumps(TINY_DISCS),
        "task.data.crop_seconds=0.5", "task.data.valid_clips=2", "task.data.valid_crop_seconds=0.5",
        "task.valid_metrics=[]", "trainer.max_steps=4", "trainer.batch_size=2", "trainer.num_workers=0",
        "trainer.precision=fp32", "trainer.log_every=2", "trainer.val_every=4", "trainer.ckpt_every=4",
        "trainer.progress=false", "trainer.threads=1",
    ]
    exp = tmp_path / "exp"
    run_recipe(ROOT / "egs" / "mini" / "semantic_codec" / "run.sh",
               ["--scale", "toy", "--data", str(tmp_path / "data"), "--feats", str(tmp_path / "feats"),
                "--exp", str(exp), "--metrics", "stoi,mel_distance",
                "--speech_teacher_config", json.dumps(HUBERT), "--text_teacher_config", json.dumps(BERT)],
               overrides, timeout=400)
    for name in ("speech", "text"):
        cache = FeatureCache(tmp_path / "feats" / name)
        assert cache.dim == 16 and cache.frame_rate == 50 and len(cache) > 0
    test = (tmp_path / "data" / "speech" / "test.jsonl").read_text().splitlines()
    assert test and all(json.loads(line).get("text") for line in test)
    metrics = json.loads((exp / "decode" / "metrics.json").read_text())
    assert {"stoi", "mel_distance"} <= set(metrics["summary"])
    assert len(list((exp / "decode" / "test").glob("*.wav"))) == len(test)
    log = (exp / "train.log").read_text()
    assert "gen/distillation/speech" in log and "gen/distillation/text" in log and "val/distillation" in log
