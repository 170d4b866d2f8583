"""Text-to-speech: a tiny LM memorises mini utterances and greedy synthesis reproduces their tokens;
batched = unbatched, streaming = offline, voice cloning, CLI, and the reference-based TTS metrics."""
from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

import audiocodec
from audiocodec.cli import main
from audiocodec.data.extract import extract_tokens
from audiocodec.data.tokens import TokenShards
from audiocodec.errors import ConfigError
from audiocodec.metrics.tts import duration_ratio, mel_cepstral_distortion
from audiocodec.train import Trainer
from audiocodec.tts import TTS, TTSVocab
from audiocodec.tts.layout import AUDIO_BOS, BOS, EOS, IGNORE, training_sequence

SENTENCES = ["Tom has a red kite.", "The sea is calm tonight.", "Six green boxes."]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is needed (the CI installs it; locally: apt-get install espeak-ng)")
    from audiocodec.data.synth import Voice, render_speech
    root = tmp_path_factory.mktemp("tts_corpus")
    voice = Voice("spk0", "en-us", "m1", pitch=45, speed=175, amplitude=120, gap=0)
    lines = []
    for i, text in enumerate(SENTENCES + ["Bring the lamp inside."]):
        seconds = render_speech(voice, text, root / f"u{i}.wav", random.Random(i))
        lines.append({"id": f"u{i}", "path": f"u{i}.wav", "duration": seconds, "sample_rate": 24000,
                      "text": text, "speaker": "spk0"})
    (root / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines[:3]))
    (root / "all.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    codec = audiocodec.load_codec(audiocodec.DEFAULT_CODEC)
    extract_tokens(root / "train.jsonl", root / "tokens", codec, num_workers=0)
    return root


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("tts_run")
    config = {
        "name": "tts",
        "task": {"type": "tts_lm", "train": str(corpus / "tokens"), "valid": str(corpus / "tokens"),
                 "model": {"dim": 64, "num_layers": 2, "num_heads": 4}, "max_tokens": 4000,
                 "codec": audiocodec.DEFAULT_CODEC, "speaker_prompt_prob": 0.0},
        "trainer": {"max_steps": 250, "log_every": 50, "val_every": 250, "ckpt_every": 250, "threads": 1,
                    "progress": False, "device": "cpu", "seed": 0},
        "optim": {"main": {"lr": 3e-3, "weight_decay": 0.0}},
    }
    Trainer(config, run_dir=run).fit()
    return run


def test_layout_scores_only_speech_and_eos():
    vocab = TTSVocab(text_size=10, speech_size=5)
    inputs, targets = training_sequence(vocab, [3, 4], torch.tensor([[0, 4]]))
    t, a = vocab.text_offset, vocab.speech_offset               # 5 specials, then 10 text ids, then speech
    assert inputs.tolist() == [[BOS, t + 3, t + 4, AUDIO_BOS, a + 0, a + 4]]
    assert targets.tolist() == [[IGNORE, IGNORE, IGNORE, a + 0, a + 4, EOS]]
    with pytest.raises(ValueError, match="out of range"):
        training_sequence(vocab, [10], torch.tensor([[0]]))
    with pytest.raises(ConfigError, match="codebook"):
        vocab.speech_ids(torch.zeros(2, 3, dtype=torch.long))


def test_speaker_prompt_layout_and_training(corpus, tmp_path):
    from audiocodec.tts.layout import PAD, SPEAKER
    vocab = TTSVocab(text_size=10, speech_size=5, num_codebooks=2)
    inputs, targets = training_sequence(vocab, [3], torch.tensor([[0], [1]]), speaker_prompt=torch.tensor([[2, 3], [4, 0]]))
    a = lambda c: vocab.speech_offset + c                            # noqa: E731
    assert inputs[:, :6].tolist() == [[SPEAKER, a(2), a(3), BOS, vocab.text_offset + 3, AUDIO_BOS],
                                      [PAD, a(4), a(0), PAD, PAD, PAD]]
    assert (targets[:, :5] == IGNORE).all() and targets[0, 5] == a(0)
    # every example gets another clip of its speaker in front; the loss still falls
    config = {"name": "spk", "task": {"type": "tts_lm", "train": str(corpus / "tokens"), "speaker_prompt_prob": 1.0,
                                      "model": {"dim": 32, "num_layers": 1, "num_heads": 2}, "max_tokens": 8000},
              "trainer": {"max_steps": 30, "log_every": 10, "val_every": 0, "ckpt_every": 100, "threads": 1,
                          "progress": False, "device": "cpu"}, "optim": {"main": {"lr": 3e-3}}}
    trainer = Trainer(config, run_dir=tmp_path / "run")
    assert all(x[0, 0] == SPEAKER for x, _ in trainer.task.train_examples.items)
    first = trainer.fit(until_step=1)["loss"]
    assert trainer.fit()["loss"] < 0.8 * first


def test_continuation_examples_have_the_shape_of_a_cloning_prompt(corpus, tmp_path):
    """continuation_prob: another clip of the speaker, text and speech, in front of the item's own, as a
    voice-cloning prompt with a transcript has them ([bos, text_a + text_b, audio_bos, speech_a, speech_b, eos])."""
    from audiocodec.data.tokens import TokenShards
    config = {"name": "cont", "task": {"type": "tts_lm", "train": str(corpus / "tokens"), "speaker_prompt_prob": 0.0,
                                       "continuation_prob": 1.0, "model": {"dim": 32, "num_layers": 1, "num_heads": 2},
                                       "max_tokens": 8000},
              "trainer": {"max_steps": 30, "log_every": 10, "val_every": 0, "ckpt_every": 100, "threads": 1,
                          "progress": False, "device": "cpu"}, "optim": {"main": {"lr": 3e-3}}}
    trainer = Trainer(config, run_dir=tmp_path / "run")
    examples, vocab = trainer.task.train_examples, trainer.task.model.vocab
    shards = TokenShards(corpus / "tokens")
    assert examples.continuations == len(examples.items) == len(shards.records) == 3
    frames = sorted(t.shape[-1] for t in shards.tokens)
    for inputs, targets in examples.items:
        speech = int((inputs[0] >= vocab.speech_offset).sum())
        assert speech in {a + b for i, a in enumerate(frames) for j, b in enumerate(frames) if i != j}
        assert int((targets[0] == EOS).sum()) == 1 and inputs[0, 0] == BOS and int((inputs[0] == AUDIO_BOS).sum()) == 1
    first = trainer.fit(until_step=1)["loss"]
    assert trainer.fit()["loss"] < 0.8 * first
    bad = {**config, "task": {**config["task"], "continuation_prob": 1.5}}
    with pytest.raises(ConfigError, match="continuation_prob"):
        Trainer(bad, run_dir=tmp_path / "bad")


def test_delay_layout_for_two_codebooks():
    from audiocodec.tts.layout import PAD, delay_force, lead_in, undelay
    vocab = TTSVocab(text_size=10, speech_size=5, num_codebooks=2)
    codes = torch.tensor([[0, 1, 2], [3, 4, 0]])
    inputs, targets = training_sequence(vocab, [3], codes)
    a = lambda c: vocab.speech_offset + c                          # noqa: E731 - speech id of code c
    seq = [[BOS, vocab.text_offset + 3, AUDIO_BOS, a(0), a(1), a(2), PAD, EOS],
           [PAD, PAD, PAD, PAD, a(3), a(4), a(0), EOS]]
    assert inputs.tolist() == [row[:-1] for row in seq]
    # row 0 is scored on its frames, its end token and eos; row 1 only where it holds a frame
    assert targets.tolist() == [[IGNORE, IGNORE] + seq[0][3:], [IGNORE, IGNORE, IGNORE, a(3), a(4), a(0), IGNORE]]
    # generation: the forced cells reproduce the pattern from sampled frames and row 0's end token
    sampled = [[a(0), a(9 % 5)], [a(1), a(3)], [a(2), a(4)], [PAD, a(0)], [a(1), a(1)], [a(2), a(2)]]
    generated = torch.empty(1, 2, 0, dtype=torch.long)
    for step, pair in enumerate(sampled):
        token = delay_force(vocab, torch.tensor([pair]), step, generated, lead_in(vocab))
        generated = torch.cat([generated, token[:, :, None]], dim=-1)
        if token[0, 0] == EOS:
            break
    assert generated[0].tolist() == [seq[0][3:], seq[1][3:]]
    assert torch.equal(undelay(vocab, generated[0]), codes)
    assert undelay(vocab, generated[0, :, :2]).tolist() == [[0], [3]]   # mid-generation: complete frames only


def test_memorised_utterances_come_back_token_for_token(corpus, trained):
    tts = TTS.load(trained / "tts")
    shards = TokenShards(corpus / "tokens")
    expected = {r["text"]: t for r, t in zip(shards.records, shards.tokens)}
    batched = tts.generate_tokens(SENTENCES, options=_greedy())
    for text, tokens in zip(SENTENCES, batched):
        assert torch.equal(tokens, expected[text]), text
    for text, tokens in zip(SENTENCES, batched):                 # batched == one at a time
        assert torch.equal(tts.generate_tokens([text], options=_greedy())[0], tokens)


def _greedy():
    from audiocodec.tts import SynthesisOptions
    return SynthesisOptions(greedy=True)


def test_streaming_equals_offline_and_reports_latency(trained):
    tts = TTS.load(trained / "tts")
    text = SENTENCES[0] + " " + SENTENCES[2]
    offline = tts.synthesize(text, greedy=True, chunk_frames=10)
    timings: dict = {}
    chunks = list(tts.synthesize(text, stream=True, greedy=True, chunk_frames=10, timings=timings))
    assert len(chunks) > 4
    assert torch.equal(torch.cat(chunks), offline)
    assert 0 < timings["first_chunk_s"] < timings["total_s"]


def test_plain_layout_joins_text_pieces(trained):
    """Text given in pieces (an iterable of str) is joined first: the same tokens as the whole str."""
    tts = TTS.load(trained / "tts")
    assert not tts.layout.bistream
    text = SENTENCES[0] + " " + SENTENCES[2]
    whole = tts.speech_tokens(text, greedy=True)
    assert len(whole) == 1 and torch.equal(tts.generate_tokens([text], options=_greedy())[0], whole[0])
    assert torch.equal(tts.speech_tokens(iter(text), greedy=True)[0], whole[0])
    assert torch.equal(tts.speech_tokens(iter(text), stream=True, greedy=True)[0], whole[0])


def test_voice_cloning_prompt_and_errors(corpus, trained):
    tts = TTS.load(trained / "tts")
    audio = tts.synthesize(SENTENCES[1], voice=corpus / "u0.wav", voice_text=SENTENCES[0], seed=0)
    assert audio.dim() == 1 and audio.shape[0] > 0
    from_audio_alone = tts.generate_tokens([SENTENCES[1]], voice=corpus / "u0.wav", options=_greedy())[0]
    assert from_audio_alone.shape[0] == 1 and from_audio_alone.shape[1] > 0      # a speaker prompt
    with pytest.raises(ConfigError, match="nothing to say"):
        tts.synthesize("   ")
    other = audiocodec.build_codec("wavtokenizer-75", encoder={"dimension": 64}, quantizer={"dim": 64},
                                   decoder={"backbone": {"input_channels": 64, "dim": 64, "intermediate_dim": 64,
                                                         "num_layers": 1}, "head": {"dim": 64}})
    with pytest.raises(ConfigError, match="trained on tokens of codec"):
        TTS.load(trained / "tts", codec=other)


def test_cli_tts_writes_speech(trained, tmp_path, capsys):
    out = tmp_path / "hello.wav"
    assert main(["tts", SENTENCES[2], "-o", str(out), "--model", str(trained / "tts"), "--greedy",
                 "--device", "cpu", "--stream"]) == 0
    wav, sr = sf.read(str(out))
    assert sr == 24000 and len(wav) > 0.3 * sr
    assert "first chunk after" in capsys.readouterr().err


def test_eval_tts_scores_every_sentence(corpus, trained, tmp_path, capsys):
    assert main(["eval-tts", str(corpus / "all.jsonl"), "--model", str(trained / "tts"), "--greedy",
                 "--device", "cpu", "--out", str(tmp_path / "ev")]) == 0
    result = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert result["clone"] is True and len(result["items"]) == 4
    assert result["summary"]["mcd"]["n"] == 4 and result["summary"]["duration_ratio"]["mean"] > 0
    assert "mcd" in capsys.readouterr().out


def test_tts_metrics_rank_distortions(corpus):
    import librosa
    ref, sr = sf.read(str(corpus / "u0.wav"), dtype="float32")
    other, _ = sf.read(str(corpus / "u1.wav"), dtype="float32")
    noisy = ref + 0.05 * np.random.default_rng(0).standard_normal(len(ref)).astype(np.float32)
    slow = librosa.effects.time_stretch(ref, rate=0.8)
    assert mel_cepstral_distortion(ref, ref, sr) == 0.0
    assert 0 < mel_cepstral_distortion(ref, slow, sr) < mel_cepstral_distortion(ref, other, sr)
    assert mel_cepstral_distortion(ref, noisy, sr) > 0
    assert duration_ratio(ref, slow, sr) == pytest.approx(1.25, abs=0.05)


def test_mini_tts_recipe_runs_end_to_end(tmp_path):
    from pathlib import Path
    from audiocodec.data.synth import missing_tools
    from helpers import run_recipe
    root = Path(__file__).resolve().parents[1]
    if missing_tools():
        pytest.fail(f"the mini corpus needs {' '.join(missing_tools())} (egs/mini/local/install_tools.sh)")
    overrides = ['task.model={"dim": 32, "num_layers": 1, "num_heads": 2}', "trainer.max_steps=3",
                 "trainer.precision=fp32", "trainer.num_workers=0", "trainer.val_every=3", "trainer.ckpt_every=3",
                 "trainer.log_every=1", "trainer.threads=1", "trainer.progress=false"]
    run_recipe(root / "egs" / "mini" / "tts" / "run.sh",
               ["--scale", "toy", "--data", str(tmp_path / "data"), "--tokens", str(tmp_path / "tokens"),
                "--exp", str(tmp_path / "exp"), "--device", "cpu"], overrides)
    result = json.loads((tmp_path / "exp" / "eval" / "metrics.json").read_text())
    n_test = sum(1 for line in (tmp_path / "data" / "test.jsonl").read_text().splitlines() if '"text"' in line)
    assert len(result["items"]) == n_test and result["clone"] is True
    assert len(list((tmp_path / "exp" / "eval").glob("*.wav"))) == n_test


def test_tts_recipes_are_valid_configs():
    from pathlib import Path
    from audiocodec.config import load_yaml
    from audiocodec.train import TASKS, resolve_config
    recipes = sorted((Path(__file__).resolve().parents[1] / "recipes" / "tts").glob("*.yaml"))
    assert {p.stem for p in recipes} >= {"mini", "ljspeech", "libritts", "vctk"}
    for path in recipes:
        config = resolve_config(load_yaml(path))
        task = TASKS.build(config["task"], "task")
        assert task.text_cfg["tokenizer"]["type"] in ("char", "phoneme", "bpe", "byte")
    with pytest.raises(ConfigError, match="bogus"):
        TASKS.build(resolve_config(load_yaml(recipes[0]), ["task.bogus=1"])["task"], "task")


def test_fine_tuning_starts_from_the_trained_model(corpus, trained, tmp_path):
    """init_from a trained TTS keeps its tokenizer and weights: the first loss on its data is far below scratch."""
    from audiocodec.tts import load_tts
    base = {"type": "tts_lm", "train": str(corpus / "tokens"), "model": {"dim": 64, "num_layers": 2, "num_heads": 4},
            "max_tokens": 4000, "speaker_prompt_prob": 0.0}
    trainer = {"max_steps": 1, "log_every": 1, "val_every": 0, "ckpt_every": 100, "threads": 1, "progress": False,
               "device": "cpu", "seed": 0}
    losses = {}
    for name, task in (("scratch", base), ("fine-tune", {**base, "init_from": str(trained / "tts")})):
        t = Trainer({"name": name, "task": task, "trainer": trainer, "optim": {"main": {"lr": 1e-9}}},
                    run_dir=tmp_path / name)
        losses[name] = t.fit()["loss"]
    assert losses["fine-tune"] < 0.2 * losses["scratch"], losses
    tuned = load_tts(tmp_path / "fine-tune" / "tts")
    assert tuned.text_config == load_tts(trained / "tts").text_config


@pytest.fixture(scope="module")
def trained_rvq(corpus, tmp_path_factory):
    """A TTS over the tokens of a 2-codebook RVQ codec (delay pattern), memorising the same utterances."""
    from helpers import seed_euclidean_rvq, synth_audio
    root = tmp_path_factory.mktemp("tts_rvq")
    codec = audiocodec.build_codec("encodec-24k", quantizer={"num_quantizers": 2}, num_codebooks=2)
    seed_euclidean_rvq(codec.encoder, codec.quantizer.layers, synth_audio(2.0, batch=2, seed=1))
    codec_path = audiocodec.save_codec(codec, root / "codec")
    extract_tokens(corpus / "train.jsonl", root / "tokens", audiocodec.load_codec(codec_path), num_workers=0)
    config = {
        "name": "tts_rvq",
        "task": {"type": "tts_lm", "train": str(root / "tokens"), "model": {"dim": 64, "num_layers": 2, "num_heads": 4},
                 "max_tokens": 4000, "codec": str(codec_path), "speaker_prompt_prob": 0.0},
        "trainer": {"max_steps": 400, "log_every": 100, "val_every": 0, "ckpt_every": 400, "threads": 1,
                    "progress": False, "device": "cpu", "seed": 0},
        "optim": {"main": {"lr": 3e-3, "weight_decay": 0.0}},
    }
    Trainer(config, run_dir=root / "run").fit()
    return root


def test_rvq_tokens_through_the_delay_pattern(corpus, trained_rvq):
    tts = TTS.load(trained_rvq / "run" / "tts")                   # the codec comes from the model's record
    assert tts.vocab.num_codebooks == 2 and tts.codec.num_codebooks == 2
    shards = TokenShards(trained_rvq / "tokens")
    expected = {r["text"]: t for r, t in zip(shards.records, shards.tokens)}
    for text, tokens in zip(SENTENCES, tts.generate_tokens(SENTENCES, options=_greedy())):
        assert tokens.shape[0] == 2 and torch.equal(tokens, expected[text]), text
    offline = tts.synthesize(SENTENCES[1], greedy=True, chunk_frames=10)
    streamed = list(tts.synthesize(SENTENCES[1], stream=True, greedy=True, chunk_frames=10))
    assert torch.equal(torch.cat(streamed), offline)
    # a voice prompt of K codebooks enters in the delay pattern: the owed frames are forced, not sampled
    cloned = tts.generate_tokens([SENTENCES[2]], voice=corpus / "u0.wav", voice_text=SENTENCES[0],
                                 options=_greedy())[0]
    assert cloned.shape[0] == 2 and cloned.shape[1] > 0
