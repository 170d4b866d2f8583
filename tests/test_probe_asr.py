"""The linear token probe and ASR-based WER/CER of reconstructions (no external model: a tiny random ASR)."""
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
from audiocodec.metrics.probe import bag_of_tokens, label_matrix, linear_probe, word_labels


def test_probe_finds_labels_carried_by_tokens_and_not_random_ones():
    g = torch.Generator().manual_seed(0)
    card, n = 32, 200
    labels = torch.rand(n, 4, generator=g) > 0.5                      # 4 "words" per clip present or not
    tokens = []
    for row in labels:
        t = torch.randint(8, card, (50,), generator=g)                 # background tokens
        for j in torch.nonzero(row).flatten().tolist():
            t[j * 5:(j + 1) * 5] = j                                   # word j shows as token j
        tokens.append(t[None])
    x, y = bag_of_tokens(tokens, card), labels.float()
    good = linear_probe(x[:150], y[:150], x[150:], y[150:])
    shuffled = linear_probe(x[:150], y[torch.randperm(150, generator=g)], x[150:], y[150:])
    assert good["micro_f1"] > 0.95 and good["map"] > 0.95
    assert shuffled["micro_f1"] < 0.8 and shuffled["map"] < good["map"] - 0.2
    assert word_labels("Hello, world! It's 5 o'clock.") == ["hello", "world", "it's", "o'clock"]
    assert label_matrix([["a", "c"]], ["a", "b", "c"]).tolist() == [[1.0, 0.0, 1.0]]


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is needed (the CI installs it)")
    from audiocodec.data.synth import Voice, render_speech
    root = tmp_path_factory.mktemp("probe")
    sentences = ["the red cat sat", "a red dog ran", "the cat ran home", "a dog sat down", "the red hat",
                 "a cat and a dog", "red and blue", "the dog ran home"]
    lines = []
    for i, text in enumerate(sentences):
        voice = Voice(f"s{i % 2}", "en-us", ["m1", "f2"][i % 2], 50, 170, 120, 0)
        sec = render_speech(voice, text, root / f"u{i}.wav", random.Random(i))
        lines.append({"id": f"u{i}", "path": f"u{i}.wav", "duration": sec, "sample_rate": 24000, "text": text})
    (root / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines[:6]))
    (root / "test.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines[6:]))
    return root


def test_probe_command_runs_on_speech(speech, tmp_path, capsys):
    out = tmp_path / "probe.json"
    assert main(["probe", str(speech / "train.jsonl"), str(speech / "test.jsonl"), "--min-count", "2",
                 "--device", "cpu", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["labels"] >= 3 and result["test_items"] == 2 and 0 <= result["micro_f1"] <= 1
    assert "word probe" in capsys.readouterr().out


def _tiny_asr(folder):
    transformers = pytest.importorskip("transformers")
    vocab = {"<pad>": 0, "|": 1, **{c: i + 2 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz'")}}
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tok = transformers.Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), pad_token="<pad>", word_delimiter_token="|")
    fe = transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000)
    transformers.Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok).save_pretrained(folder)
    cfg = transformers.Wav2Vec2Config(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8),
                                      num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, pad_token_id=0)
    torch.manual_seed(0)
    transformers.Wav2Vec2ForCTC(cfg).save_pretrained(folder)
    return folder


def test_eval_reports_wer_and_cer_with_a_local_asr_model(speech, tmp_path):
    asr = _tiny_asr(tmp_path / "asr")
    out = tmp_path / "m.json"
    assert main(["eval", "--manifest", str(speech / "test.jsonl"), "--asr-model", str(asr), "--metrics", "stoi",
                 "--device", "cpu", "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert {"wer", "cer"} <= set(result["summary"])
    from audiocodec.metrics.asr import ASRScorer
    scorer = ASRScorer(asr)
    wav, sr = sf.read(str(speech / "u0.wav"), dtype="float32")
    same = scorer.score_pair(wav, sr, wav, sr)
    assert same == {"wer": 0.0, "cer": 0.0}                       # identical audio is heard identically
    with pytest.raises(audiocodec.ConfigError, match="local transformers model folder"):
        ASRScorer(tmp_path / "nope")
