"""Property-based tests (hypothesis): audio files round-trip for any length, channel count, rate and subtype;
chunked coding keeps every output length and equals unchunked coding away from chunk seams (causal codec);
codes files round-trip, and truncated or corrupted ones raise :class:`CodesError`, never anything else."""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from audiocodec import AudioError, Codes, CodesError
from audiocodec.audio import load_audio, save_audio
from faults_support import tiny_codec
from helpers import assert_rvq_codes_match

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# -- audio I/O --------------------------------------------------------------------------------------------

#: (extension, subtype, largest error for values in [-1, 1]; None: lossy, not compared)
SUBTYPES = [
    ("wav", "PCM_16", 2 ** -15), ("wav", "PCM_24", 2 ** -23), ("wav", "PCM_32", 1e-7), ("wav", "PCM_U8", 2 ** -7),
    ("wav", "FLOAT", 0.0), ("wav", "DOUBLE", 0.0), ("wav", "ULAW", 0.035), ("wav", "ALAW", 0.035),
    ("wav", "IMA_ADPCM", None), ("flac", "PCM_S8", 2 ** -7), ("flac", "PCM_16", 2 ** -15), ("flac", "PCM_24", 2 ** -23),
    ("flac", None, 2 ** -15), ("aiff", "PCM_16", 2 ** -15), ("aiff", "PCM_U8", 2 ** -7), ("aiff", "ULAW", 0.035),
    ("aiff", "FLOAT", 0.0), ("au", "PCM_24", 2 ** -23), ("au", "ALAW", 0.035), ("ogg", "VORBIS", None),
]

#: block-based or 8-bit AIFF subtypes that libsndfile pads: save_audio refuses lengths they cannot hold
REFUSABLE = {("wav", "IMA_ADPCM"), ("aiff", "PCM_U8"), ("aiff", "ULAW")}


@st.composite
def audio_files(draw):
    ext, subtype, tol = draw(st.sampled_from(SUBTYPES))
    channels = draw(st.integers(1, 3))
    length = draw(st.integers(1, 3000))
    if ext == "ogg":
        rate = draw(st.sampled_from([8000, 16000, 22050, 44100, 48000]))
    else:
        rate = draw(st.one_of(st.sampled_from([8000, 16000, 22050, 24000, 44100, 48000, 96000]),
                              st.integers(1000, 192000)))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    loud = draw(st.booleans())  # values beyond full scale: integer formats must clip, never wrap around
    g = torch.Generator().manual_seed(seed)
    wav = (torch.rand(channels, length, generator=g) * 2 - 1) * (1.5 if loud else 0.9)
    return ext, subtype, tol, rate, wav


@settings(max_examples=60, **SETTINGS)
@given(case=audio_files())
@example(case=("wav", "ULAW", 0.035, 16000, torch.tensor([[0.5, 1.5, -1.5, 3.0]])))     # wrapped around before
@example(case=("aiff", "PCM_U8", 2 ** -7, 8000, torch.tensor([[0.1, 0.2, 0.3]])))        # gained a sample before
@example(case=("wav", "IMA_ADPCM", None, 8000, torch.tensor([[0.1] * 7])))              # padded to a block before
@example(case=("wav", "IMA_ADPCM", None, 8000, torch.zeros(3, 4)))                       # a LibsndfileError before
@example(case=("flac", "PCM_16", 2 ** -15, 99934, torch.zeros(1, 4)))                    # a LibsndfileError before
@example(case=("wav", "PCM_16", 2 ** -15, 22051, torch.rand(2, 3000)))                   # 3 GB resampling kernel before
def test_save_then_load_gives_the_same_audio_or_a_clear_refusal(case):
    ext, subtype, tol, rate, wav = case
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"x.{ext}"
        try:
            save_audio(path, wav, rate, subtype=subtype)
        except AudioError as e:  # only for a subtype that cannot hold the samples exactly
            flac_rate = ext == "flac" and rate > 65535 and rate % 10  # FLAC frame headers cannot say such a rate
            assert "cannot write" in str(e) and ((ext, subtype) in REFUSABLE or flac_rate), e
            assert list(Path(d).iterdir()) == []
            return
        assert [p.name for p in Path(d).iterdir()] == [path.name]   # no temporary file left
        back, sr = load_audio(path)
        assert sr == rate and back.shape == wav.shape and back.dtype == torch.float32
        if tol is not None:
            expected = wav if subtype in ("FLOAT", "DOUBLE") else wav.clamp(-1, 1)
            err = (back - expected).abs().max().item()
            assert err <= tol * 1.01 + 1e-7, (err, tol)
        # loading with conversions gives the torchaudio lengths and the asked channel count
        target = 24000 if rate != 24000 else 16000
        conv, sr2 = load_audio(path, sample_rate=target, channels=1)
        assert sr2 == target and conv.shape == (1, math.ceil(wav.shape[-1] * target / rate))


# -- chunked coding ------------------------------------------------------------------------------------

HOP = 320
#: frames of left context the tiny causal codec's encoder and decoder need to be exact (their receptive fields
#: are 8-9 frames); frames with less context after a window start may differ from unchunked coding
SEAM = 12


@pytest.fixture(scope="module")
def causal():
    codec = tiny_codec(seed=2)
    assert codec.can_stream  # causal encoder and decoder
    return codec


def _exact_frames(total: int, chunk: int, ctx: int) -> torch.Tensor:
    """Frames whose window (``Codec._chunked``) starts at the signal's start or ``SEAM`` frames before them."""
    ok = torch.zeros(total, dtype=torch.bool)
    for start in range(0, total, chunk):
        w0 = max(0, start - ctx)
        for t in range(start, min(start + chunk, total)):
            ok[t] = w0 == 0 or t - w0 >= SEAM
    return ok


@settings(max_examples=25, **SETTINGS)
@given(seconds=st.floats(0.01, 2.0), rate=st.sampled_from([8000, 16000, 22050, 24000, 44100, 48000]),
       chunk=st.sampled_from([0.1, 0.2, 0.35]), context=st.sampled_from([0.0, 0.05, 0.5]),
       seed=st.integers(0, 2 ** 31), second=st.floats(0.1, 1.0))
@example(seconds=1.4600027433909168, rate=22050, chunk=0.2, context=0.0, seed=9613, second=1.0)  # a near-tie
def test_chunked_coding_keeps_lengths_and_matches_unchunked_away_from_seams(causal, seconds, rate, chunk, context,
                                                                             seed, second):
    codec = causal
    g = torch.Generator().manual_seed(seed)
    n = max(1, int(seconds * rate))
    m = max(1, int(n * second))  # a second item of the batch, shorter (padded)
    wav = torch.randn(2, 1, n, generator=g) * 0.3
    seen = []   # the unchunked encode's latents, to tell a near-tie from a real difference
    quantize = codec.quantizer.encode
    try:
        codec.chunk_seconds, codec.context_seconds = 1e9, 0.0
        codec.quantizer.encode = lambda latents, *a, **k: seen.append(latents) or quantize(latents, *a, **k)
        full = codec.encode(wav, sample_rate=rate, lengths=[n, m])
        del codec.quantizer.encode
        full_audio = codec.decode(full)
        reference = codec.decode(full.tokens)
        codec.chunk_seconds, codec.context_seconds = chunk, context
        codes = codec.encode(wav, sample_rate=rate, lengths=[n, m])
        audio = codec.decode(codes)
        chunked_decode_of_full = codec.decode(full.tokens)
    finally:
        codec.chunk_seconds, codec.context_seconds = 60.0, 1.0
        codec.quantizer.__dict__.pop("encode", None)
    # lengths: frames of the resampled input; each item decodes to exactly its input's duration
    resampled = math.ceil(n * 24000 / rate)
    assert codes.tokens.shape == (2, codec.num_codebooks, math.ceil(resampled / HOP))
    assert codes.lengths.tolist() == [math.ceil(math.ceil(k * 24000 / rate) / HOP) for k in (n, m)]
    assert codes.output_lengths.tolist() == [round(k * 24000 / rate) for k in (n, m)]
    assert audio.shape == (2, 1, round(n * 24000 / rate))
    assert torch.count_nonzero(audio[1, :, int(codes.output_lengths[1]):]) == 0   # past the shorter item's end
    # chunked == unchunked where the window holds enough context, up to codes flipped at near-ties (the latents
    # agree to float rounding; seed 9613 at 22,050 Hz, chunk 0.2 s: two codes 3e-7 apart in squared distance)
    total = codes.tokens.shape[-1]
    ok = _exact_frames(total, max(1, int(chunk * codec.frame_rate)), int(context * codec.frame_rate))
    books = [layer.codebook.embed for layer in codec.quantizer.layers]
    assert_rvq_codes_match(codes.tokens[..., ok], full.tokens[..., ok], seen[0][..., ok], books, max_flips=0.05)
    samples = ok.repeat_interleave(HOP)
    assert torch.allclose(chunked_decode_of_full[..., samples], reference[..., samples], atol=1e-5)
    if context >= 0.5:  # context beyond the receptive fields: everything matches (but near-ties)
        assert_rvq_codes_match(codes.tokens, full.tokens, seen[0], books, max_flips=0.05)
        if torch.equal(codes.tokens, full.tokens):
            torch.testing.assert_close(audio, full_audio, atol=1e-5, rtol=0)


# -- codes files ---------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 40, 2 ** 40) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=8)


@st.composite
def codes_objects(draw):
    batch = draw(st.integers(1, 3))
    k = draw(st.integers(1, 4))
    cardinality = draw(st.sampled_from([2, 1024, 32767, 32768, 32769, 65536, 2 ** 20]))
    hop = draw(st.sampled_from([320, 512, 600, 441]))
    sample_rate = draw(st.sampled_from([16000, 24000, 44100, 48000]))
    in_rate = draw(st.integers(1000, 768000))
    in_lengths = draw(st.lists(st.integers(0, 20000), min_size=batch, max_size=batch))
    lengths = [math.ceil(math.ceil(x * sample_rate / in_rate) / hop) for x in in_lengths]
    frames = max(lengths + [1]) + draw(st.integers(0, 3))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31)))
    tokens = torch.randint(0, cardinality, (batch, k, frames), generator=g)
    return Codes(tokens=tokens, lengths=torch.tensor(lengths), model_id=draw(st.text(min_size=1, max_size=12)),
                 sample_rate=sample_rate, frame_rate=sample_rate / hop, cardinality=cardinality,
                 input_sample_rate=in_rate, input_lengths=torch.tensor(in_lengths),
                 input_channels=draw(st.integers(1, 8)), fingerprint=draw(st.text("0123456789abcdef", max_size=12)),
                 extra=draw(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=3)))


def _same(a: Codes, b: Codes) -> bool:
    return (torch.equal(a.tokens, b.tokens) and torch.equal(a.lengths, b.lengths)
            and torch.equal(a.input_lengths, b.input_lengths)
            and (a.model_id, a.fingerprint, a.sample_rate, a.frame_rate, a.cardinality, a.input_sample_rate,
                 a.input_channels, a.extra) ==
            (b.model_id, b.fingerprint, b.sample_rate, b.frame_rate, b.cardinality, b.input_sample_rate,
             b.input_channels, b.extra))


@settings(max_examples=40, **SETTINGS)
@given(codes=codes_objects(), cut=st.floats(0.0, 0.999), flips=st.lists(st.tuples(st.floats(0, 0.999),
                                                                                  st.integers(1, 255)),
                                                                        min_size=1, max_size=3))
def test_codes_file_round_trips_and_damage_raises_codes_error(codes, cut, flips):
    with tempfile.TemporaryDirectory() as d:
        path = codes.save(Path(d) / "c.npz")
        assert [p.name for p in Path(d).iterdir()] == ["c.npz"]
        loaded = Codes.load(path)
        assert _same(codes, loaded)
        assert torch.equal(loaded.output_lengths, codes.output_lengths)
        data = path.read_bytes()
        # any truncation is detected (the zip directory is at the end)
        path.write_bytes(data[: int(cut * len(data))])
        with pytest.raises(CodesError):
            Codes.load(path)
        # corrupted bytes: an error that says so, or (damage outside the data, e.g. a timestamp) the same codes
        damaged = bytearray(data)
        for where, xor in flips:
            damaged[int(where * len(data))] ^= xor
        path.write_bytes(bytes(damaged))
        try:
            again = Codes.load(path)
        except CodesError:
            pass
        else:
            assert _same(codes, again)
