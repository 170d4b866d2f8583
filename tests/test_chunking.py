"""Chunked offline coding of long inputs (``Codec._chunked``): same shapes as unchunked, nearly the same codes."""
import pytest
import torch

import audiocodec
from helpers import seed_euclidean_rvq, synth_audio


def snr_db(ref: torch.Tensor, x: torch.Tensor) -> float:
    return (10 * torch.log10(ref.pow(2).sum() / (ref - x).pow(2).sum().clamp_min(1e-30))).item()


@pytest.fixture(scope="module")
def small_codec():
    return audiocodec.build_codec("encodec-24k")


@pytest.mark.parametrize("total_frames,chunk_seconds,context_seconds", [
    (40, 0.1, 0.0),     # chunk 7 frames: a last window of 5 frames, no context
    (42, 0.1, 0.05),    # last window exactly full
    (43, 0.1, 0.05),    # last window of 1 frame
    (43, 0.1, 1.0),     # context longer than the whole input
    (7, 0.1, 0.05),     # a single window
])
@pytest.mark.parametrize("frames_in,frames_out,partial", [(320, 1, 37), (320, 1, 0), (1, 320, 0)])
def test_window_stitching(small_codec, total_frames, chunk_seconds, context_seconds, frames_in, frames_out, partial):
    """Each frame of the output comes from the window that holds it as centre, at its own position,
    including a last partial frame of samples."""
    codec = small_codec
    codec.chunk_seconds, codec.context_seconds = chunk_seconds, context_seconds
    length = total_frames * frames_in - (frames_in - partial if partial else 0)
    x = torch.arange(length, dtype=torch.float64)[None, None].repeat(2, 1, 1)
    seen = []

    def fn(w):  # frame index of each window frame (from its first sample), repeated frames_out times
        seen.append(w.shape[-1])
        return (w[..., ::frames_in] / frames_in).floor().repeat_interleave(frames_out, dim=-1)

    n_frames = -(-length // frames_in)
    y = codec._chunked(fn, x, frames_in=frames_in, frames_out=frames_out, total_frames=n_frames)
    expected = torch.arange(n_frames, dtype=torch.float64).repeat_interleave(frames_out)
    assert y.shape == (2, 1, n_frames * frames_out)
    assert torch.equal(y[0, 0], expected) and torch.equal(y[1, 0], expected)
    chunk = int(chunk_seconds * codec.frame_rate)
    assert len(seen) == (1 if n_frames <= chunk else -(-n_frames // chunk))


@pytest.fixture(scope="module")
def long_input():
    wav = synth_audio(3.0, batch=2, seed=5)[..., :-123]
    return wav, [wav.shape[-1], wav.shape[-1] - 10007]  # a padded batch with per-item lengths


def _codec(name, **overrides):
    torch.manual_seed(0)
    codec = audiocodec.build_codec(name, **overrides).eval()
    seed_euclidean_rvq(codec.encoder, codec.quantizer.layers, synth_audio(2.0, batch=2, seed=1))
    return codec


def _compare(codec, wav, lengths, chunk_seconds, context_seconds):
    """(unchunked codes, chunked codes, unchunked audio, chunked audio, chunked decode of the unchunked codes)."""
    codec.chunk_seconds, codec.context_seconds = 1e9, context_seconds
    full = codec.encode(wav, lengths=lengths)
    audio_full = codec.decode(full)
    codec.chunk_seconds = chunk_seconds
    chunked = codec.encode(wav, lengths=lengths)
    audio_chunked = codec.decode(chunked)
    audio_same_codes = codec.decode(full)
    return full, chunked, audio_full, audio_chunked, audio_same_codes


def _frame_agreement(a, b) -> float:
    """Fraction of valid frames whose codes agree in every codebook."""
    same = (a.tokens == b.tokens).all(dim=1)
    return torch.cat([same[i, :n] for i, n in enumerate(a.lengths.tolist())]).float().mean().item()


def _check_shapes(codec, wav, lengths, full, chunked, audio_full, audio_chunked):
    assert chunked.tokens.shape == full.tokens.shape
    assert full.tokens.shape[-1] == -(-wav.shape[-1] // codec.hop_length)
    assert torch.equal(chunked.lengths, full.lengths)
    assert audio_chunked.shape == audio_full.shape == wav.shape
    assert not audio_chunked[1, :, lengths[1]:].any()  # past the shorter item's end: zeros
    # bare tensors decode to T * hop samples, chunked or not
    assert codec.decode(chunked.tokens).shape[-1] == chunked.tokens.shape[-1] * codec.hop_length


def test_chunked_causal_encodec(long_input):
    wav, lengths = long_input
    codec = _codec("encodec-24k")
    full, chunked, audio_full, audio_chunked, audio_same = _compare(codec, wav, lengths, 0.4, 0.3)
    _check_shapes(codec, wav, lengths, full, chunked, audio_full, audio_chunked)
    assert all(len(full.tokens[0, k].unique()) > 20 for k in range(8))  # codes vary
    agreement = _frame_agreement(full, chunked)
    print(f"encodec-24k chunked (0.4 s + 0.3 s context): {agreement:.2%} of frames agree, "
          f"audio SNR {snr_db(audio_full, audio_chunked):.1f} dB, same codes {snr_db(audio_full, audio_same):.1f} dB")
    # measured: 99.5 % of frames, 110 dB; same codes 132 dB (the context absorbs LSTM / padding warm-up)
    assert agreement >= 0.99
    assert snr_db(audio_full, audio_same) > 80
    assert snr_db(audio_full, audio_chunked) > 30
    # within the first window everything is exactly the unchunked result (causal: no look-ahead)
    first = int(codec.chunk_seconds * codec.frame_rate)
    assert torch.equal(chunked.tokens[..., :first], full.tokens[..., :first])


def test_chunked_non_causal_wavtokenizer(long_input):
    wav, lengths = long_input
    codec = _codec("wavtokenizer-75")
    full, chunked, audio_full, audio_chunked, audio_same = _compare(codec, wav, lengths, 0.4, 0.3)
    _check_shapes(codec, wav, lengths, full, chunked, audio_full, audio_chunked)
    agreement = _frame_agreement(full, chunked)
    print(f"wavtokenizer-75 chunked (0.4 s + 0.3 s context): {agreement:.2%} of frames agree, "
          f"audio SNR {snr_db(audio_full, audio_chunked):.1f} dB, same codes {snr_db(audio_full, audio_same):.1f} dB")
    # measured: 100 % of frames (the SEANet encoder sees 0.3 s either side); the Vocos decoder has
    # global attention and a ~36-frame conv receptive field, so its chunked audio differs more (~27 dB)
    assert agreement >= 0.97
    assert snr_db(audio_full, audio_same) > 15
