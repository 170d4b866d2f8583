"""The codec shipped inside the package: it loads by name, is the CLI's default, and reconstructs speech.

The quality floor is set below the held-out figures of its model card (STOI 0.70 on unseen espeak-ng
voices and sentences) so it catches a broken file or loader, not training noise.
"""
from __future__ import annotations

import random
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

import audiocodec
from audiocodec import cli
from audiocodec.codecs.embedded import ASSETS_DIR, DEFAULT_CODEC, EMBEDDED_CODECS, model_card
from audiocodec.metrics.signal import mel_distance, stoi


def test_default_codec_is_embedded_small_and_documented():
    assert DEFAULT_CODEC in audiocodec.list_embedded()
    path = ASSETS_DIR / EMBEDDED_CODECS[DEFAULT_CODEC]
    assert path.stat().st_size < 40e6
    card = model_card(DEFAULT_CODEC)
    assert card and "held-out" in card.lower() and "STOI" in card
    assert cli.DEFAULT_MODEL == DEFAULT_CODEC
    codec = audiocodec.load_codec(DEFAULT_CODEC)
    assert (codec.sample_rate, codec.frame_rate, codec.cardinality) == (24000, 75, 4096)
    assert all(p.dtype == torch.float32 for p in codec.parameters())


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is needed (the CI installs it; locally: apt-get install espeak-ng)")
    from audiocodec.data.synth import Voice, render_speech
    path = tmp_path_factory.mktemp("speech") / "s.wav"
    voice = Voice("x", "en-us", "f2", pitch=50, speed=160, amplitude=120, gap=0)
    render_speech(voice, "The quick brown fox jumps over the lazy dog near the river bank.", path,
                  random.Random(0))
    wav, sr = sf.read(str(path), dtype="float32")
    return torch.from_numpy(wav)[None, None], sr


def test_default_codec_reconstructs_unseen_speech(speech):
    wav, sr = speech
    trained = audiocodec.load_codec(DEFAULT_CODEC)
    untrained = audiocodec.build_codec(trained.config).prepare_for_inference()
    scores = {}
    for name, codec in (("trained", trained), ("untrained", untrained)):
        with torch.no_grad():
            codes = codec.encode(wav, sample_rate=sr)
            out = codec.decode(codes)
        assert out.shape[-1] == wav.shape[-1] * codec.sample_rate // sr
        ref, hyp = wav[0, 0].numpy(), out[0, 0].numpy()
        scores[name] = (float(stoi(ref, hyp, sr)), float(mel_distance(ref, hyp, sr)))
    assert scores["trained"][0] > 0.6, scores
    assert scores["trained"][1] < 0.6 * scores["untrained"][1], scores
    tokens = trained.encode(wav, sample_rate=sr).tokens
    assert len(torch.unique(tokens)) > 0.3 * tokens.numel()    # the codebook is in use, not collapsed


def test_cli_reconstruct_without_model_uses_the_embedded_codec(speech, tmp_path, capsys):
    wav, sr = speech
    src = tmp_path / "in.wav"
    sf.write(str(src), wav[0, 0].numpy(), sr)
    assert cli.main(["reconstruct", str(src), "-o", str(tmp_path / "out"), "-q"]) == 0
    out, out_sr = sf.read(str(tmp_path / "out" / "in.wav"))
    assert out_sr == 24000 and abs(len(out) - wav.shape[-1] * 24000 // sr) <= 1
    assert np.abs(out).max() > 0.01


def test_an_embedded_tts_loads_by_name(tmp_path, monkeypatch):
    """The slot for a shipped TTS: a model file in the assets folder loads by name (none ships yet)."""
    from audiocodec.codecs import embedded
    from audiocodec.text.tokenizers import build_tokenizer
    from audiocodec.tts import TTS, TTSModel, save_tts
    codec = audiocodec.load_codec(DEFAULT_CODEC)
    tok = build_tokenizer({"type": "char", "corpus": ["abc"]})
    info = {"model_id": codec.name, "fingerprint": codec.fingerprint(), "sample_rate": 24000, "frame_rate": 75.0,
            "num_codebooks": 1, "cardinality": codec.cardinality,
            "source": str(ASSETS_DIR / EMBEDDED_CODECS[DEFAULT_CODEC])}
    model = TTSModel({"text_size": tok.vocab_size, "speech_size": codec.cardinality},
                     {"dim": 16, "num_layers": 1, "num_heads": 2}, {"tokenizer": tok.to_dict()}, info)
    save_tts(model, tmp_path / "tiny-tts.safetensors")
    (tmp_path / "tiny-tts.md").write_text("# card")
    monkeypatch.setattr(embedded, "ASSETS_DIR", tmp_path)
    monkeypatch.setattr(embedded, "EMBEDDED_TTS", {"tiny-tts": "tiny-tts.safetensors"})
    monkeypatch.setattr(embedded, "DEFAULT_TTS", "tiny-tts")
    assert embedded.default_tts_path() == tmp_path / "tiny-tts.safetensors"
    assert TTS.load("tiny-tts").vocab.text_size == tok.vocab_size
    assert embedded.model_card("tiny-tts") == "# card"


def test_cli_tts_without_model_speaks_with_the_embedded_tts(tmp_path):
    """`audiocodec tts TEXT -o out.wav` on a fresh installation: the embedded tts-mini, with the embedded codec
    its tokens come from (same codebook fingerprint)."""
    from audiocodec.codecs.embedded import DEFAULT_TTS, model_card
    from audiocodec.tts import TTS
    tts = TTS.load(DEFAULT_TTS)
    assert tts.model.codec_info["fingerprint"] == audiocodec.load_codec(DEFAULT_CODEC).fingerprint()
    assert "tts-mini — model card" in model_card(DEFAULT_TTS)
    out = tmp_path / "hello.wav"
    assert cli.main(["tts", "Hello there, how are you?", "-o", str(out), "--seed", "0", "--device", "cpu"]) == 0
    audio, sr = sf.read(str(out))
    assert sr == 24000 and 0.5 < len(audio) / sr < 10 and np.abs(audio).max() > 0.01


def test_cli_sing_without_model_sings_with_the_embedded_song_model(tmp_path):
    """`audiocodec sing --lyrics F -o out.wav` on a fresh installation: the embedded song-mini (interleaving
    A-V) with the embedded music codec its tokens come from; a mixture and its two stems, as long as asked."""
    from audiocodec.codecs.embedded import DEFAULT_SONG, default_song_path, model_card
    from audiocodec.song import SongGenerator
    assert default_song_path().stat().st_size < 80e6
    gen = SongGenerator.load(DEFAULT_SONG)
    assert gen.model.codec_info["fingerprint"] == audiocodec.load_codec("music-rvq-40-small-mini").fingerprint()
    assert gen.codec.name == "music-rvq-40-small" and "song-mini — model card" in model_card(DEFAULT_SONG)
    lyrics = tmp_path / "lyrics.txt"
    lyrics.write_text("Deep town burn\nYou dream in the cold")
    out = tmp_path / "song.wav"
    assert cli.main(["sing", "--lyrics", str(lyrics), "--description", "funk, groovy, 112 bpm, E major; slap bass and "
                     "drums; female vocals", "--duration", "1.0", "-o", str(out), "--seed", "0", "--device", "cpu"]) == 0
    for path in (out, out.with_suffix(".vocal.wav"), out.with_suffix(".accompaniment.wav")):
        audio, sr = sf.read(str(path))
        assert sr == 24000 and abs(len(audio) / sr - 1.0) < 0.05 and np.abs(audio).max() > 0.001
