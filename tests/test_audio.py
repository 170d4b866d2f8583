"""Audio I/O and conversions."""
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from audiocodec import audio


def tone(seconds=1.0, sr=24000, freq=440.0, channels=1):
    t = torch.arange(int(seconds * sr)) / sr
    x = 0.5 * torch.sin(2 * math.pi * freq * t)
    return x.repeat(channels, 1)


@pytest.mark.parametrize("ext,tol", [(".wav", 1e-4), (".flac", 1e-4), (".ogg", 0.1), (".mp3", 0.1)])
def test_save_load_round_trip(tmp_path, ext, tol):
    if ext == ".mp3" and "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile cannot write mp3")
    x = tone(channels=2)
    path = audio.save_audio(tmp_path / f"a{ext}", x, 24000)
    y, sr = audio.load_audio(path)
    assert sr == 24000 and y.shape[0] == 2
    n = min(x.shape[-1], y.shape[-1])
    assert abs(y.shape[-1] - x.shape[-1]) < 0.1 * 24000  # lossy codecs may add a little padding
    if ext in (".wav", ".flac"):
        assert y.shape == x.shape and (y - x).abs().max() < tol
    else:  # lossy: compare energy, not samples
        assert abs(y[:, :n].pow(2).mean().sqrt() - x[:, :n].pow(2).mean().sqrt()) < tol


def test_load_with_resample_channels_offset(tmp_path):
    sf.write(tmp_path / "s.wav", np.stack([tone(2.0, 16000).numpy()[0]] * 2, axis=1), 16000)
    y, sr = audio.load_audio(tmp_path / "s.wav", sample_rate=24000, channels=1, offset=0.5, duration=1.0)
    assert sr == 24000 and y.shape == (1, 24000)


def test_resample_preserves_a_tone():
    x = tone(1.0, 44100, 1000.0)
    y = audio.resample(x, 44100, 24000)
    assert y.shape[-1] == 24000
    spectrum = torch.fft.rfft(y[0]).abs()
    assert abs(spectrum.argmax().item() - 1000) <= 1  # 1 Hz bins


def test_convert_channels():
    st = torch.stack([torch.ones(10), -torch.ones(10)])
    assert torch.allclose(audio.convert_channels(st, 1), torch.zeros(1, 10))
    assert audio.convert_channels(torch.ones(1, 10), 2).shape == (2, 10)


def test_peak_and_loudness_normalisation():
    x = tone()
    y = audio.normalize_peak(x, -6.0)
    assert abs(y.abs().max().item() - 10 ** (-6 / 20)) < 1e-6
    z = audio.normalize_loudness(0.01 * tone(3.0), 24000, target_lufs=-23.0)
    assert abs(audio.loudness(z, 24000) - (-23.0)) < 0.5
    silence = torch.zeros(1, 24000)
    assert torch.equal(audio.normalize_peak(silence), silence)
    assert torch.equal(audio.normalize_loudness(silence, 24000), silence)


def test_list_audio_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.wav", "a/b/y.flac", "z.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in audio.list_audio_files(tmp_path)] == ["y.flac", "x.wav"]
