"""The web demo (demos/app.py): handlers on good and bad input, the song adapter, the temporary folder, and
a real browser (Debian's chromium driven by playwright) using the page end to end.

Screenshots of every tab go to tests/artifacts/demo_*.png; docs/demo.png (the README's picture) is written
when it is missing (or with UPDATE_DEMO_SCREENSHOT=1).
"""
from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import audiocodec

try:
    import gradio as gr
except ImportError:                                         # a clear failure, not a skip: CI installs it
    raise ImportError("the demo tests need gradio (pip install -e '.[demo]')") from None

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
SENTENCES = ["Tom has a red kite.", "The sea is calm tonight.", "Six green boxes."]

def _load_app():
    spec = importlib.util.spec_from_file_location("audiocodec_demo_app", ROOT / "demos" / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


app = _load_app()


# -- fixtures ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Good and bad inputs: espeak-ng speech, silence, noise too long, not audio, empty, too short."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is needed (the CI installs it; locally: apt-get install espeak-ng)")
    from audiocodec.data.synth import Voice, render_speech
    root = tmp_path_factory.mktemp("demo_clips")
    voice = Voice("spk0", "en-us", "m1", pitch=45, speed=175, amplitude=120, gap=0)
    for i, text in enumerate(SENTENCES):
        render_speech(voice, text, root / f"u{i}.wav", random.Random(i))
    sr = 16000
    sf.write(root / "silent.wav", np.zeros(sr, np.float32), sr)
    sf.write(root / "long.wav", 0.1 * np.random.default_rng(0).standard_normal(61 * 8000).astype(np.float32), 8000)
    sf.write(root / "short.wav", 0.1 * np.ones(800, np.float32), sr)
    wav, rate = sf.read(root / "u0.wav", dtype="float32")
    sf.write(root / "stereo44k.flac", np.stack([wav, 0.5 * wav], 1), rate)   # resampled + mixed by the app
    (root / "notes.txt").write_text("this is a text file, not audio\n")
    (root / "fake.wav").write_text("RIFF? no: plain text with a .wav name\n")
    (root / "empty.wav").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def tiny_tts(clips, tmp_path_factory):
    """A tiny TTS trained in a few seconds on three espeak-ng sentences (as in test_tts.py)."""
    from audiocodec.data.extract import extract_tokens
    from audiocodec.train import Trainer
    root = tmp_path_factory.mktemp("demo_tts")
    lines = []
    for i, text in enumerate(SENTENCES):
        seconds = sf.info(str(clips / f"u{i}.wav")).duration
        lines.append({"id": f"u{i}", "path": str(clips / f"u{i}.wav"), "duration": seconds, "sample_rate": 24000,
                      "text": text, "speaker": "spk0"})
    (root / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    extract_tokens(root / "train.jsonl", root / "tokens", audiocodec.load_codec(audiocodec.DEFAULT_CODEC),
                   num_workers=0)
    config = {
        "name": "tts",
        "task": {"type": "tts_lm", "train": str(root / "tokens"), "valid": str(root / "tokens"),
                 "model": {"dim": 64, "num_layers": 2, "num_heads": 4}, "max_tokens": 4000,
                 "codec": audiocodec.DEFAULT_CODEC},
        "trainer": {"max_steps": 150, "log_every": 50, "val_every": 150, "ckpt_every": 150, "threads": 1,
                    "progress": False, "device": "cpu", "seed": 0},
        "optim": {"main": {"lr": 3e-3, "weight_decay": 0.0}},
    }
    Trainer(config, run_dir=root / "run").fit()
    return root / "run" / "tts"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A folder with one small RVQ checkpoint (4 codebooks of 64), for --model-dir and the bitrate control."""
    root = tmp_path_factory.mktemp("demo_models")
    torch.manual_seed(0)
    small = dict(n_filters=4, dimension=32, lstm=0)
    codec = audiocodec.build_codec("encodec-24k", num_codebooks=4, encoder=small, decoder=small,
                                   quantizer=dict(num_quantizers=4, codebook_size=64, dim=32, kmeans_init=False))
    audiocodec.save_codec(codec, root / "tiny" / "rvq.safetensors")
    return root


@pytest.fixture(scope="module")
def demo(tiny_tts, model_dir, tmp_path_factory):
    from audiocodec.codecs import embedded
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(embedded, "DEFAULT_SONG", None)   # the song tab without a model (the embedded one: below)
        d = app.Demo(model_dir=str(model_dir), tts_model=str(tiny_tts), device="cpu",
                     temp_dir=str(tmp_path_factory.mktemp("demo_tmp")), speech_output="progressive")
    yield d
    d.close()


def _error_message(excinfo) -> str:
    return getattr(excinfo.value, "message", None) or str(excinfo.value)


# -- codec tab ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, message", [
    (None, "No audio given: upload a file or record"),
    ("notes.txt", "'notes.txt' is not an audio file this demo can read. Upload a WAV, FLAC, OGG or MP3"),
    ("fake.wav", "'fake.wav' is not an audio file"),
    ("empty.wav", "file is empty (0 bytes)"),
    ("silent.wav", "is silent (digital silence). Upload or record a clip with sound"),
    ("long.wav", "is 61.0 s long; the demo takes up to 60 s. Trim it"),
    ("short.wav", "is only 0.05 s long; give at least 0.25 s"),
    ("missing.wav", "upload was lost"),
])
def test_bad_audio_is_answered_with_what_to_do(demo, clips, name, message):
    path = None if name is None else str(clips / name)
    with pytest.raises(gr.Error) as excinfo:
        demo.reconstruct_ui(path, demo.default_label, 1)
    assert message in _error_message(excinfo)


def test_too_large_upload_is_rejected(demo, tmp_path, monkeypatch):
    monkeypatch.setattr(app, "MAX_UPLOAD_MB", 0.01)
    big = tmp_path / "big.wav"
    sf.write(big, 0.1 * np.ones(16000, np.float32), 16000)
    with pytest.raises(gr.Error) as excinfo:
        demo.reconstruct_ui(str(big), demo.default_label, 1)
    assert "the demo takes files up to" in _error_message(excinfo)


def test_unknown_model_is_rejected(demo, clips):
    with pytest.raises(gr.Error, match="Unknown model"):
        demo.reconstruct_ui(str(clips / "u0.wav"), "no-such-model", 1)


def test_good_clip_gives_audio_pictures_and_scores(demo, clips):
    original, recon, spec_o, spec_r, tokens, stats = demo.reconstruct_ui(str(clips / "stereo44k.flac"),
                                                                         demo.default_label, 1)
    seconds = sf.info(str(clips / "stereo44k.flac")).duration
    for rate, wav in (original, recon):
        assert rate == 24000 and wav.dtype == np.int16 and wav.ndim == 1
        assert abs(len(wav) / rate - seconds) < 0.02
        assert np.abs(wav).max() > 1000                       # real sound, not silence
    assert spec_o.shape == spec_r.shape and spec_o.dtype == np.uint8 and spec_o.shape[0] == 256
    assert spec_o.shape[2] == 3 and spec_o.std() > 10          # a picture, not a flat colour
    assert tokens.dtype == np.uint8 and tokens.ndim == 3 and tokens.shape[0] == 96   # 1 codebook x 96 px
    for label in ("Bitrate", "0.90 kbps", "75 frames/s", "PESQ-wb", "STOI", "Mel distance"):
        assert label in stats
    r = demo.reconstruct(str(clips / "u1.wav"), demo.default_label)
    s = r.stats
    assert s["frame_rate"] == 75 and s["num_codebooks"] == 1 and s["bitrate_kbps"] == pytest.approx(0.9)
    assert 1.0 <= s["pesq"] <= 4.65 and 0.0 < s["stoi"] <= 1.0 and s["mel_distance"] > 0
    assert s["frames"] == r.tokens.shape[1] == pytest.approx(s["seconds"] * 75, abs=1)


def test_simultaneous_requests_do_not_mix_outputs(demo, clips):
    """Several users at once (different clips, different codebook settings of one shared RVQ codec): each
    gets exactly what it gets alone."""
    from concurrent.futures import ThreadPoolExecutor
    rvq = next(k for k in demo.choices if k.endswith("rvq.safetensors"))
    jobs = [(str(clips / name), model, k) for name in ("u0.wav", "u1.wav", "stereo44k.flac")
            for model, k in ((demo.default_label, 1), (rvq, 1), (rvq, 4))]
    alone = [demo.reconstruct_ui(*job)[1] for job in jobs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        together = list(pool.map(lambda job: demo.reconstruct_ui(*job)[1], jobs * 2))
    for i, (rate, wav) in enumerate(together):
        assert rate == alone[i % len(jobs)][0] and np.array_equal(wav, alone[i % len(jobs)][1]), jobs[i % len(jobs)]


def test_rvq_codebook_control_sets_the_bitrate(demo, clips):
    label = next(k for k in demo.choices if k.endswith("rvq.safetensors"))
    assert list(demo.choices)[0] == f"{audiocodec.DEFAULT_CODEC} (embedded)"      # the default first
    k_max, k, text = demo.codec_controls(label)
    assert (k_max, k) == (4, 4) and "4 of 4 codebooks" in text
    assert "1 of 4 codebooks" in demo.bitrate_text(label, 1)
    low = demo.reconstruct(str(clips / "u0.wav"), label, 1)
    high = demo.reconstruct(str(clips / "u0.wav"), label, 3)
    assert low.tokens.shape[0] == 1 and high.tokens.shape[0] == 3
    assert high.stats["bitrate_kbps"] == pytest.approx(3 * low.stats["bitrate_kbps"])
    assert high.token_map.shape[0] == 3 * 85                    # one band per codebook


def test_model_choices(model_dir, tmp_path):
    plain = app.model_choices()
    assert list(plain) == [f"{audiocodec.DEFAULT_CODEC} (embedded)",       # the default first; no random weights
                           "music-rvq-40-small-mini (embedded)"]           # unless asked
    with_dir = app.model_choices(str(model_dir))
    assert with_dir[str(Path("tiny") / "rvq.safetensors")] == str((model_dir / "tiny" / "rvq.safetensors").resolve())
    everything = app.model_choices(str(model_dir), random_configs=True)
    assert "encodec-24k (random weights)" in everything and list(everything)[0] == list(plain)[0]
    with pytest.raises(audiocodec.ConfigError, match="no such folder"):
        app.model_choices(str(tmp_path / "nope"))


def test_pictures():
    t = np.array([[0, 63, 32, 1], [5, 5, 5, 5]])
    img = app.token_image(t, 64)
    assert img.shape[0] == 2 * 96 and img[0, 0].tolist() == [68, 1, 84] and img[0, -1].tolist() != [68, 1, 84]
    with pytest.raises(ValueError, match="tokens"):
        app.token_image(np.zeros((2, 0), int), 64)
    tone = np.sin(2 * np.pi * 440 * np.arange(24000) / 24000).astype(np.float32)
    spec, top = app.spectrogram_image(tone, 24000)
    quiet, _ = app.spectrogram_image(0.01 * tone, 24000, top_db=top)
    assert spec.shape == quiet.shape and quiet.mean() < spec.mean()      # one scale for both pictures


def test_model_cache_loads_once_under_concurrency():
    calls = []

    def slow(key):
        calls.append(key)
        time.sleep(0.2)
        return object()
    cache = app.ModelCache(slow)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("a"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["a"] and len({id(r) for r in results}) == 1 and "a" in cache


def test_app_limits_and_temporary_folder(tmp_path):
    before = os.environ.get("GRADIO_TEMP_DIR")
    d = app.Demo(temp_dir=str(tmp_path))
    assert d.workdir.parent == tmp_path and os.environ["GRADIO_TEMP_DIR"].startswith(str(d.workdir))
    blocks = app.build_app(demo=d)
    assert isinstance(blocks, gr.Blocks) and blocks.demo is d
    assert blocks._queue.max_size == app.QUEUE_SIZE and blocks.delete_cache is not None
    assert app.launch_kwargs(d)["max_file_size"] == f"{app.MAX_UPLOAD_MB}mb"
    audio_in = next(c for c in blocks.blocks.values() if getattr(c, "elem_id", None) == "codec-input")
    assert audio_in.sources == ["upload", "microphone"]
    d.close()
    assert not d.workdir.exists() and os.environ.get("GRADIO_TEMP_DIR") == before


def test_main_rejects_bad_arguments(tmp_path, capsys):
    assert app.main(["--tts-model", str(tmp_path / "none"), "--temp-dir", str(tmp_path)]) == 2
    assert "--tts-model" in capsys.readouterr().err
    assert app.main(["--model-dir", str(tmp_path / "none"), "--temp-dir", str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []                      # nothing left behind


# -- speech tab --------------------------------------------------------------------------------------

def test_speech_arrives_progressively_with_latency(demo):
    outs = list(demo.speak(SENTENCES[0] + " " + SENTENCES[2], greedy=True, min_interval=0.0))
    lengths = [len(audio[1]) for audio, _ in outs]
    assert len(outs) >= 3 and lengths == sorted(lengths) and lengths[0] < lengths[-1]
    assert all(audio[0] == 24000 and audio[1].dtype == np.int16 for audio, _ in outs)
    assert re.match(r"First audio after \*\*\d+\.\d\d s\*\*", outs[0][1])
    assert "real-time factor" in outs[-1][1]
    offline = demo.tts().synthesize(SENTENCES[0] + " " + SENTENCES[2], greedy=True)
    np.testing.assert_array_equal(outs[-1][0][1], app.to_int16(offline))


def test_speech_streams_chunks(demo):
    outs = list(demo.speak(SENTENCES[2], greedy=True, stream=True))
    chunks = [audio[1] for audio, _ in outs if audio is not None]
    assert len(chunks) >= 2 and outs[-1][0] is None and "First audio after" in outs[-1][1]
    np.testing.assert_array_equal(np.concatenate(chunks), app.to_int16(demo.tts().synthesize(SENTENCES[2],
                                                                                              greedy=True)))


def test_speech_with_reference_voice(demo, clips):
    outs = list(demo.speak(SENTENCES[1], voice=str(clips / "u0.wav"), voice_text=SENTENCES[0], temperature=0.8,
                           top_k=10, top_p=0.9, seed=3))
    assert len(outs[-1][0][1]) > 0.2 * 24000
    # without its transcript the clip is a speaker prompt (the TTS was trained with some)
    outs = list(demo.speak(SENTENCES[1], voice=str(clips / "u0.wav"), greedy=True))
    assert len(outs[-1][0][1]) > 0.2 * 24000


@pytest.mark.parametrize("kwargs, message", [
    (dict(text="   "), "Type some text to speak first"),
    (dict(text="word " * 200), "the demo speaks up to 600"),
    (dict(text="Hi there.", voice_text="what it says"), "without a reference voice"),
    (dict(text="Hi there.", voice="notes.txt", voice_text="x"), "'notes.txt' is not an audio file"),
    (dict(text="Hi there.", voice="long.wav", voice_text="x"), "takes up to 20 s"),
    (dict(text="Hi there.", temperature=0.0), "Temperature must be between"),
    (dict(text="!!!"), "Cannot speak this text: the text '!!!' gives no tokens after normalisation. Change"),
])
def test_speech_bad_inputs(demo, clips, kwargs, message):
    if "voice" in kwargs:
        kwargs["voice"] = str(clips / kwargs["voice"])
    with pytest.raises(gr.Error) as excinfo:
        list(demo.speak(**kwargs))
    assert message in _error_message(excinfo)


def test_speech_without_model_says_how_to_load_one(tmp_path, monkeypatch):
    from audiocodec.codecs import embedded
    monkeypatch.setattr(embedded, "DEFAULT_TTS", None)   # an installation without the embedded TTS
    d = app.Demo(temp_dir=str(tmp_path))
    try:
        with pytest.raises(gr.Error, match="No TTS model loaded: start the demo with --tts-model"):
            list(d.speak("Hello."))
        assert "No TTS model loaded" in d.about_markdown()
    finally:
        d.close()


def test_default_demo_speaks_with_the_embedded_tts(tmp_path):
    """A fresh installation: no --tts-model, the Speech tab uses the embedded tts-mini, About shows its card."""
    d = app.Demo(temp_dir=str(tmp_path), device="cpu")
    try:
        assert d.tts_path and d.tts_path.endswith("tts-mini.safetensors")
        outputs = list(d.speak("Hello there.", seed=0))
        sr, audio = [o for o in outputs[-1] if isinstance(o, tuple)][0]
        assert sr == 24000 and 0.3 < len(audio) / sr < 10
        assert "tts-mini — model card" in d.about_markdown()
    finally:
        d.close()


def test_default_demo_sings_with_the_embedded_song_model(tmp_path):
    """A fresh installation: no --song-model, the Song tab sings with the embedded song-mini (mixture and
    both stems), About shows its card and the music codec's."""
    d = app.Demo(temp_dir=str(tmp_path), device="cpu")
    try:
        assert d.song_status() is None and d.song_path.endswith("song-mini.safetensors")
        mixture, vocal, accompaniment, status = d.sing("Deep town burn\nYou dream in the cold",
                                                       "funk, 112 bpm; slap bass and drums", duration=1.0, seed=0)
        for sr, audio in (mixture, vocal, accompaniment):
            assert sr == 24000 and abs(len(audio) / sr - 1.0) < 0.05
        about = d.about_markdown()
        assert "song-mini — model card" in about and "music-rvq-40-small-mini — model card" in about
        assert "interleaving_A_V" in about
    finally:
        d.close()


def test_about_shows_model_cards(demo):
    text = demo.about_markdown()
    assert "wavtokenizer-75-small-mini — model card" in text
    assert "24000 Hz" in text and "parameters" in text and "dim 64" in text
    assert "No song model loaded" in text


# -- song tab ----------------------------------------------------------------------------------------

def test_song_without_model_or_package(demo, tmp_path):
    with pytest.raises(gr.Error, match="No song model loaded"):
        demo.sing("la la la")
    (tmp_path / "song").mkdir()
    d = app.Demo(song_model=str(tmp_path / "song"), temp_dir=str(tmp_path))
    try:
        if app.song_package() is None:
            with pytest.raises(gr.Error, match="no song package"):
                d.sing("la la la")
    finally:
        d.close()


def test_song_is_wired_to_the_song_package(tmp_path, monkeypatch, clips):
    """A stand-in ``audiocodec.song``: the tab passes every control and shows the mixture and stems."""
    seen = {}

    class SongGenerator:
        sample_rate = 16000
        modes = ("mixed", "interleaving_A_V")

        @classmethod
        def load(cls, path, device="cpu"):
            seen["load"] = (path, str(device))
            return cls()

        def generate(self, lyrics, description=None, voice=None, mode="mixed", duration=10.0, cfg_scale=1.0,
                     seed=None):
            seen.update(lyrics=lyrics, description=description, voice=voice, mode=mode, duration=duration,
                        cfg_scale=cfg_scale, seed=seed)
            n = int(duration * self.sample_rate)
            t = np.arange(n) / self.sample_rate
            vocal, accomp = 0.3 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 110 * t)
            return {"mixture": vocal + accomp, "vocal": vocal, "accompaniment": torch.tensor(accomp)[None]}

    monkeypatch.setitem(sys.modules, "audiocodec.song", types.SimpleNamespace(SongGenerator=SongGenerator))
    (tmp_path / "song").mkdir()
    d = app.Demo(song_model=str(tmp_path / "song"), temp_dir=str(tmp_path), device="cpu")
    try:
        assert d.song_status() is None
        with pytest.raises(gr.Error, match="Type some lyrics"):
            d.sing("  ")
        with pytest.raises(gr.Error, match="Duration must be"):
            d.sing("la", duration=0)
        mix, vocal, accomp, status = d.sing("la la la", "happy pop", str(clips / "u0.wav"), "interleaving_A_V",
                                            2.0, 3.0, 7)
        assert seen["load"][0] == str(tmp_path / "song")
        assert seen["lyrics"] == "la la la" and seen["description"] == "happy pop" and seen["mode"] == "interleaving_A_V"
        assert seen["duration"] == 2.0 and seen["cfg_scale"] == 3.0 and seen["seed"] == 7
        assert seen["voice"].shape[0] == 1 and seen["voice"].shape[-1] > 16000 * 0.5     # resampled to 16 kHz
        for rate, wav in (mix, vocal, accomp):
            assert rate == 16000 and len(wav) == 32000 and wav.dtype == np.int16
        assert "2.0 s of song" in status and d.song_modes() == ["mixed", "interleaving_A_V"]
    finally:
        d.close()


def test_song_tab_with_a_song_model_of_the_package(tmp_path, clips):
    """An (untrained) dual-track model of ``audiocodec.song`` on the embedded codec: loaded from its folder,
    its mode offered, a song with both stems made from lyrics, a description and a reference voice."""
    song = pytest.importorskip("audiocodec.song", reason="the song package is not part of this checkout")
    codec = audiocodec.load_codec(audiocodec.DEFAULT_CODEC)
    info = {"model_id": codec.name, "fingerprint": codec.fingerprint(), "sample_rate": codec.sample_rate,
            "frame_rate": codec.frame_rate, "num_codebooks": 1, "cardinality": codec.cardinality,
            "source": audiocodec.DEFAULT_CODEC}
    small = {"num_layers": 1, "num_heads": 2}
    conditioners = {"lyrics": {**song.fit_text_config({"tokenizer": {"type": "char"}}, ["la la la"]), **small},
                    "description": {**song.fit_text_config({"tokenizer": {"type": "char"}}, ["happy pop"]), **small},
                    "voice": {"seconds": 0.5, **small}}
    torch.manual_seed(0)
    model = song.SongModel("interleaving_A_V", info, {"dim": 32, "num_layers": 1, "num_heads": 2}, conditioners,
                           window_frames=64)
    song.save_song(model, tmp_path / "song")
    d = app.Demo(song_model=str(tmp_path / "song"), temp_dir=str(tmp_path), device="cpu")
    try:
        assert d.song_status() is None
        d.song()
        assert d.song_modes() == ["interleaving_A_V"] and "interleaving_A_V" in d.about_markdown()
        mix, vocal, accomp, status = d.sing("la la la", "happy pop", str(clips / "u0.wav"), "interleaving_A_V",
                                            1.0, 3.0, 0)
        for rate, wav in (mix, vocal, accomp):
            assert rate == 24000 and wav.dtype == np.int16 and 0 < len(wav) <= 24000 + 320
        assert len(mix[1]) == len(vocal[1]) == len(accomp[1]) and "s of song" in status
        with pytest.raises(gr.Error, match="Cannot make this song: .*mode"):
            d.sing("la la la", mode="mixed", duration=1.0)
    finally:
        d.close()


def test_song_outputs_accepts_common_shapes():
    rate, mix, stems = app.song_outputs(torch.zeros(1, 100), 8000)
    assert rate == 8000 and mix.shape == (100,) and stems == {}
    obj = types.SimpleNamespace(sample_rate=22050, vocal=np.ones(10), accompaniment=np.ones(12))
    rate, mix, stems = app.song_outputs(obj, 8000)
    assert rate == 22050 and len(mix) == 12 and set(stems) == {"vocal", "accompaniment"}
    with pytest.raises(ValueError, match="without audio"):
        app.song_outputs({"nothing": 1}, 8000)


# -- the page in a real browser ----------------------------------------------------------------------

def _chromium() -> str:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("the browser test needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("the browser test needs playwright (pip install playwright; .ci/run installs it). It drives "
                    "the system chromium, so 'playwright install' is not needed")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """demos/app.py in a subprocess on a free port, as on a fresh installation (the embedded codec and TTS);
    yields (url, its temporary folder, process); stopped with SIGTERM."""
    port = _free_port()
    log = tmp_path / "server.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "demos" / "app.py"), "--server-port", str(port),
                                 "--temp-dir", str(tmp_path), "--device", "cpu"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
    try:
        deadline = time.time() + 120
        while "Running on" not in log.read_text():
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"the demo did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        workdir = Path(re.search(r"temporary files: (\S+)", log.read_text()).group(1))
        yield f"http://127.0.0.1:{port}/", workdir, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _playable_duration(page, component: str) -> float:
    """Seconds of the audio that ``component`` offers, decoded by the browser itself (-1: not playable)."""
    href = page.locator(f"#{component} a[href*='gradio_api/file=']").first.get_attribute("href")
    return page.evaluate("""(u) => new Promise(res => { const a = new Audio(); a.preload = 'auto';
        a.onloadedmetadata = () => res(a.duration); a.onerror = () => res(-1); a.src = u; })""", href)


def test_browser_end_to_end(server, clips):
    chromium = _chromium()
    from playwright.sync_api import expect, sync_playwright
    url, workdir, proc = server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60000)
            # assertions wait as long as actions do (playwright's expect has its own 5 s default, which a slow
            # machine's synthesis once outlasted)
            expect.set_options(timeout=60000)
            page.goto(url, wait_until="domcontentloaded")
            expect(page.get_by_role("tab", name="Codec")).to_be_visible()

            # Codec tab: upload a clip, reconstruct, see two playable clips, spectrograms, tokens, scores
            page.locator("#codec-input input[type=file]").set_input_files(str(clips / "u1.wav"))
            expect(page.locator("#codec-input a[href*='gradio_api/file=']").first).to_be_attached()
            uploads = [f for f in (workdir / "gradio").rglob("*.wav")]
            assert uploads, "the upload is kept inside the app's own temporary folder"
            page.click("#codec-run")
            expect(page.locator("#codec-spec-recon img")).to_be_visible()
            expect(page.locator("#codec-spec-original img")).to_be_visible()
            expect(page.locator("#codec-tokens img")).to_be_visible()
            expect(page.locator("#codec-stats")).to_contain_text("PESQ-wb")
            assert page.locator("#codec-spec-recon img").evaluate("i => i.naturalWidth") >= 500
            seconds = sf.info(str(clips / "u1.wav")).duration
            for component in ("codec-recon", "codec-original"):
                assert abs(_playable_duration(page, component) - seconds) < 0.05, component
            page.screenshot(path=str(ARTIFACTS / "demo_codec.png"), full_page=True)
            docs = ROOT / "docs" / "demo.png"
            if not docs.exists() or os.environ.get("UPDATE_DEMO_SCREENSHOT"):
                docs.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(docs), full_page=True)

            # a text file with an audio name gets past the browser's file filter: the app answers
            page.locator("#codec-input button[aria-label='Clear']").click()
            page.locator("#codec-input input[type=file]").set_input_files(str(clips / "fake.wav"))
            expect(page.locator("#codec-input a[href*='fake.wav']").first).to_be_attached()
            page.click("#codec-run")
            toast = page.locator("[data-testid='toast-body']").filter(has_text="'fake.wav' is not an audio file")
            expect(toast).to_be_visible()
            expect(toast).to_contain_text("Upload a WAV, FLAC, OGG or MP3 file")
            page.screenshot(path=str(ARTIFACTS / "demo_error.png"))
            toast.locator("[data-testid='toast-close']").click()
            expect(toast).to_have_count(0)

            # Speech tab: type a sentence, get audio and the first-chunk latency
            page.get_by_role("tab", name="Speech").click()
            page.locator("#speech-text textarea").fill(SENTENCES[2])
            page.click("#speech-run")
            expect(page.locator("#speech-status")).to_contain_text("real-time factor")
            expect(page.locator("#speech-status")).to_contain_text("First audio after")
            if page.locator("#speech-output a[href*='gradio_api/file=']").count():   # progressive output
                assert _playable_duration(page, "speech-output") > 0.5
            else:                                 # streamed output (ffmpeg installed): the player holds the stream
                player = page.locator("#speech-output audio[src]")
                expect(player).to_have_count(1)
                assert player.evaluate("""a => new Promise(res => a.readyState >= 1 ? res(a.duration)
                    : a.addEventListener('loadedmetadata', () => res(a.duration)))""") > 0.5
            page.screenshot(path=str(ARTIFACTS / "demo_speech.png"), full_page=True)

            page.get_by_role("tab", name="Song").click()
            expect(page.locator("#song-status-top")).to_contain_text("song-mini.safetensors")   # the embedded one
            page.screenshot(path=str(ARTIFACTS / "demo_song.png"), full_page=True)
            page.get_by_role("tab", name="About").click()
            expect(page.locator("#about")).to_contain_text("model card")
            page.screenshot(path=str(ARTIFACTS / "demo_about.png"), full_page=True)
        finally:
            browser.close()
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert not workdir.exists(), "the app removes its temporary folder when it stops"
