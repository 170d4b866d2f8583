"""The ``ctc_asr`` task: a tiny wav2vec2-CTC recogniser trained on espeak-ng clips through the real Trainer,
its export (loaded by the ASR scorer and the semantic teacher loader), config errors, exact resume."""
from __future__ import annotations

import json
import random
import shutil
import sys

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from audiocodec.errors import CheckpointError, ConfigError
from audiocodec.train import Trainer
from audiocodec.train import checkpoint as ckpt
from audiocodec.train.ctc_task import (CTCASRTask, TranscriptNormalizer, build_vocab, ctc_frames_needed, edit_distance,
                                       error_rates)

transformers = pytest.importorskip("transformers")

SENTENCES = ["the red cat sat", "a red dog ran", "the cat ran home", "a dog sat down", "the red hat",
             "a cat and a dog", "red and blue", "the dog ran home", "Ten cats sat.", "blue hats ran"]
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """10 espeak-ng utterances (~1.2 s, 24 kHz): 8 to train on (+ one record without text), 2 to validate."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is needed (the CI installs it)")
    from audiocodec.data.synth import Voice, render_speech
    root = tmp_path_factory.mktemp("ctc_corpus")
    lines = []
    for i, text in enumerate(SENTENCES):
        voice = Voice(f"s{i % 2}", "en-us", ["m1", "f2"][i % 2], 50, 170, 120, 0)
        sec = render_speech(voice, text, root / f"u{i}.wav", random.Random(i))
        lines.append({"id": f"u{i}", "path": f"u{i}.wav", "duration": sec, "sample_rate": 24000, "text": text})
    music = {"id": "m0", "path": "u0.wav", "duration": lines[0]["duration"], "sample_rate": 24000, "kind": "music"}
    (root / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines[:8] + [music]))
    (root / "valid.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines[8:]))
    return root


def config(corpus, **trainer):
    cfg = {"task": {"type": "ctc_asr", "train": str(corpus / "train.jsonl"), "valid": str(corpus / "valid.jsonl"),
                    "model": dict(TINY), "max_batch_seconds": 6},
           "trainer": {"max_steps": 40, "log_every": 5, "val_every": 20, "ckpt_every": 100, "threads": 1,
                       "progress": False, "device": "cpu", "val_batch_size": 4, "best_metric": "val/cer"},
           "optim": {"main": {"lr": 3.0e-3}}}
    cfg["trainer"].update(trainer)
    return cfg


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """40 steps without interruption: ``(run_dir, trainer history)``."""
    run = tmp_path_factory.mktemp("ctc_run")
    trainer = Trainer(config(corpus), run)
    trainer.fit()
    return run, trainer.history


def test_transcripts_vocabulary_and_scores():
    norm = TranscriptNormalizer()
    assert norm("Dr. Smith paid $3.50 - it's 10% off!") == \
        "doctor smith paid three dollars and fifty cents it's ten percent off"
    assert TranscriptNormalizer(lowercase=False, punctuation=True)("Hello,  world|!") == "Hello, world!"
    vocab = build_vocab(["ab c", "b'a"])
    assert vocab == ["<pad>", "<unk>", "|", "'", "a", "b", "c"]
    assert ctc_frames_needed([4, 4, 5]) == 4 and edit_distance("kitten", "sitting") == 3
    refs, hyps = ["the cat sat", "a dog"], ["the bat sat", ""]
    cer, wer = error_rates(refs, hyps)
    assert cer == pytest.approx(6 / 16) and wer == pytest.approx(3 / 5)
    with pytest.MonkeyPatch.context() as mp:              # without jiwer: the module's edit distance
        mp.setitem(sys.modules, "jiwer", None)
        assert error_rates(refs, hyps) == pytest.approx((cer, wer))


def test_trains_through_the_trainer_and_exports_a_transformers_folder(corpus, trained):
    run, history = trained
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0]             # the CTC loss falls
    val = [h for h in history if "val/loss" in h]
    assert len(val) == 2 and all({"val/cer", "val/wer"} <= set(h) for h in val)
    assert all(0.0 <= h["val/cer"] <= 1.5 for h in val)
    log = (run / "train.log").read_text()
    assert "skipped {'no text': 1" in log                                  # the record without text, counted

    asr = run / "asr"
    names = {p.name for p in asr.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "tokenizer_config.json", "preprocessor_config.json",
            "audiocodec_asr.json"} <= names
    vocab = json.loads((asr / "vocab.json").read_text())
    assert vocab["<pad>"] == 0 and "|" in vocab and " " not in vocab and "t" in vocab and "T" not in vocab
    config = json.loads((asr / "config.json").read_text())
    assert config["architectures"] == ["Wav2Vec2ForCTC"] and config["pad_token_id"] == 0
    assert config["vocab_size"] == len(vocab) and config["sampling_rate"] == 16000
    assert json.loads((asr / "preprocessor_config.json").read_text())["sampling_rate"] == 16000
    info = json.loads((asr / "audiocodec_asr.json").read_text())
    assert info["step"] == 40 and info["text"]["lowercase"] is True
    assert (run / "best" / "best.json").is_file() and (run / "best" / "model.safetensors").is_file()

    # the exported weights are the checkpoint's
    model = transformers.AutoModelForCTC.from_pretrained(str(asr))
    saved = load_file(str(run / "checkpoints" / ckpt.checkpoint_name(40) / ckpt.MODEL_FILE))
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[f"asr.{k}"]), k

    # audiocodec eval --asr-model: the pipeline loads with no other argument, transcribes 24 kHz audio
    from audiocodec.metrics.asr import ASRScorer
    scorer = ASRScorer(asr)
    wav, sr = sf.read(str(corpus / "u0.wav"), dtype="float32")
    assert isinstance(scorer.transcribe(wav, sr), str)
    assert scorer.score_pair(wav, sr, wav, sr) == {"wer": 0.0, "cer": 0.0}
    processor = transformers.AutoProcessor.from_pretrained(str(asr))
    assert processor.tokenizer.pad_token_id == 0 and processor.tokenizer.word_delimiter_token == "|"
    assert processor.tokenizer.decode([vocab["t"], vocab["t"], 0, vocab["t"], vocab["|"], vocab["a"]]) == "tt a"

    # --speech_teacher: the encoder through AutoModel, features [B, T, hidden] at the codec's rate
    from audiocodec.semantic import build_teacher
    teacher = build_teacher("speech", {"path": str(asr)}, sample_rate=24000, frame_rate=50)
    assert teacher.normalize and teacher.model_sample_rate == 16000 and teacher.dim == TINY["hidden_size"]
    out = teacher(torch.randn(2, 24000), lengths=[24000, 12000])
    assert out.features.shape == (2, 49, TINY["hidden_size"]) and out.lengths.tolist() == [49, 24]
    assert torch.isfinite(out.features).all()


def test_resume_matches_an_uninterrupted_run(corpus, trained, tmp_path):
    reference, _ = trained
    Trainer(config(corpus), tmp_path).fit(until_step=20)
    resumed = Trainer(config(corpus), tmp_path)
    assert resumed.step == 20
    resumed.fit()
    a = load_file(str(reference / "checkpoints" / ckpt.checkpoint_name(40) / ckpt.MODEL_FILE))
    b = load_file(str(tmp_path / "checkpoints" / ckpt.checkpoint_name(40) / ckpt.MODEL_FILE))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_config_errors_name_the_problem(corpus, tmp_path):
    def build(cfg):
        Trainer(cfg, tmp_path / "run")

    cfg = config(corpus)
    cfg["task"]["max_batch_secs"] = 6
    with pytest.raises(ConfigError, match="task.max_batch_secs"):
        build(cfg)
    cfg = config(corpus)
    cfg["task"]["model"]["hidden_sise"] = 32
    with pytest.raises(ConfigError, match="task.model.hidden_sise"):
        build(cfg)
    cfg = config(corpus)
    cfg["task"]["model"]["vocab_size"] = 40
    with pytest.raises(ConfigError, match="task.model.vocab_size is set by the task"):
        build(cfg)
    cfg = config(corpus)
    cfg["task"]["text"] = {"lower": True}
    with pytest.raises(ConfigError, match="task.text.lower"):
        build(cfg)

    untranscribed = tmp_path / "untranscribed.jsonl"
    lines = [json.loads(x) for x in (corpus / "train.jsonl").read_text().splitlines()]
    untranscribed.write_text("".join(json.dumps({k: v for k, v in x.items() if k != "text"} | {
        "path": str(corpus / x["path"])}) + "\n" for x in lines))
    cfg = config(corpus)
    cfg["task"]["train"] = str(untranscribed)
    with pytest.raises(ConfigError, match=r"no record has a transcript \('text'\)"):
        build(cfg)

    elsewhere = tmp_path / "elsewhere.jsonl"      # relative paths resolved against another folder
    elsewhere.write_text((corpus / "train.jsonl").read_text())
    cfg = config(corpus)
    cfg["task"]["train"] = str(elsewhere)
    with pytest.raises(ConfigError, match=r"audio files not found, e.g. .*u\d.wav"):
        build(cfg)

    with pytest.raises(CheckpointError, match="trained with another vocabulary"):
        task = CTCASRTask(train=str(corpus / "train.jsonl"))
        task.vocab = ["<pad>", "<unk>", "|", "a"]
        task.load_state_dict({"vocab": ["<pad>", "<unk>", "|", "b"]})


def test_missing_transformers_names_the_extra(corpus, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError("No module named 'transformers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    task = CTCASRTask(train=str(corpus / "train.jsonl"))
    with pytest.raises(ConfigError, match=r"audiocodec\[semantic\]"):
        task.model_config(10)



def test_recipe_is_a_valid_config():
    from pathlib import Path
    from audiocodec.config import load_yaml
    from audiocodec.train import TASKS, resolve_config
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "asr" / "ctc_mini.yaml"
    config = resolve_config(load_yaml(recipe))
    task = TASKS.build(config["task"], "task")
    cfg = task.model_config(30)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.pad_token_id, cfg.vocab_size) == (256, 6, 0, 30)
    assert cfg.ctc_loss_reduction == "mean" and cfg.ctc_zero_infinity and cfg.sampling_rate == 16000
    assert config["trainer"]["best_metric"] == "val/cer"


def test_init_from_an_exported_model(corpus, trained, tmp_path):
    run, history = trained
    first = next(h["loss"] for h in history if "loss" in h)
    cfg = config(corpus, max_steps=1, log_every=1, val_every=0, init_from=str(run / "asr"))
    cfg["optim"]["main"]["lr"] = 1e-9
    assert Trainer(cfg, tmp_path / "tuned").fit()["loss"] < 0.6 * first
    other = tmp_path / "other.jsonl"                 # transcripts with other characters: another vocabulary
    records = [json.loads(x) for x in (corpus / "train.jsonl").read_text().splitlines()]
    other.write_text("".join(json.dumps({**r, "path": str(corpus / r["path"]), "text": "xyz"}) + "\n" for r in records))
    cfg["task"]["train"] = str(other)
    with pytest.raises(ConfigError, match="its vocabulary .* is not the one of"):
        Trainer(cfg, tmp_path / "other")
