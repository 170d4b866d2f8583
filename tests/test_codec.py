"""The shared Codec interface, on every named config."""
import math

import pytest
import torch

import audiocodec
from helpers import synth_audio

SMALL = {  # the named configs, shrunk so the suite stays fast; structure and interface unchanged
    "wavtokenizer-75": dict(encoder={"n_filters": 8}, decoder={"backbone": {"dim": 64, "intermediate_dim": 128,
                                                                             "num_layers": 2}, "head": {"dim": 64}}),
    "wavtokenizer-40": dict(encoder={"n_filters": 8}, decoder={"backbone": {"dim": 64, "intermediate_dim": 128,
                                                                             "num_layers": 2}, "head": {"dim": 64}}),
    "encodec-24k": dict(encoder={"n_filters": 8}, decoder={"n_filters": 8}),
    "vocos-encodec-24k": dict(encoder={"n_filters": 8}, decoder={"backbone": {"dim": 64, "intermediate_dim": 128},
                                                                 "head": {"dim": 64}}),
    "dac-24k": dict(encoder={"dim": 8}, decoder={"dim": 32}),
}


def small(name):
    return audiocodec.build_codec(name, **SMALL[name]).eval()


def test_every_named_config_is_listed():
    assert set(SMALL) <= set(audiocodec.list_codecs())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_properties(name):
    codec = small(name)
    assert codec.sample_rate == 24000
    assert codec.frame_rate == pytest.approx(24000 / codec.hop_length)
    assert codec.bitrate == pytest.approx(codec.frame_rate * codec.num_codebooks * math.log2(codec.cardinality))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_batch_any_rate_exact_lengths(name):
    codec = small(name)
    wav = synth_audio(1.0, 16000, batch=3)
    lengths = [16000, 9000, 333]
    codes = codec.encode(wav, 16000, lengths=lengths)
    assert codes.tokens.dtype == torch.long and codes.tokens.shape[:2] == (3, codec.num_codebooks)
    expected_frames = [math.ceil(math.ceil(n * 24000 / 16000) / codec.hop_length) for n in lengths]
    assert codes.lengths.tolist() == expected_frames
    audio = codec.decode(codes)
    assert audio.shape == (3, 1, 24000)
    assert codes.output_lengths.tolist() == [round(n * 1.5) for n in lengths]
    for i, n in enumerate(codes.output_lengths.tolist()):
        assert torch.all(audio[i, :, n:] == 0)
    # one item of a padded batch decodes alone to its own duration
    assert codec.decode(codes[2]).shape == (1, 1, 500)
    latents = codec.decode_latent(codes)
    assert latents.shape[0] == 3 and latents.shape[-1] == codes.tokens.shape[-1]


@pytest.mark.parametrize("shape", [(7000,), (2, 7000), (1, 2, 7000)])
def test_input_shapes_and_channels(shape):
    codec = small("encodec-24k")
    codes = codec.encode(torch.randn(shape) * 0.1, 24000)
    assert codes.input_channels == (1 if len(shape) == 1 else shape[-2])
    assert codec.decode(codes).shape == (1, 1, 7000)


def test_set_num_codebooks_changes_bitrate():
    codec = small("encodec-24k")
    codec.set_num_codebooks(2)
    assert codec.bitrate == 1500
    assert codec.encode(torch.randn(1, 4800) * 0.1).tokens.shape[1] == 2
    with pytest.raises(ValueError, match="1..32"):
        codec.set_num_codebooks(33)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_save_load_round_trip(tmp_path, name):
    codec = small(name)
    wav = synth_audio(0.5)
    ref = codec.encode(wav)
    path = audiocodec.save_codec(codec, tmp_path / name)
    loaded = audiocodec.load_codec(path.parent)
    codes = loaded.encode(wav)
    assert torch.equal(codes.tokens, ref.tokens)
    assert codes.fingerprint == ref.fingerprint
    assert torch.allclose(loaded.decode(codes), codec.decode(ref), atol=1e-5)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_training_forward(name):
    codec = small(name).train()
    wav = synth_audio(0.5, batch=2)
    out = codec(wav)
    assert out.audio.shape == wav.shape
    assert out.codes.shape[0] == 2 and out.latents.shape[-1] == out.codes.shape[-1]
    loss = out.audio.pow(2).mean() + sum(out.losses.values())
    loss.backward()
    assert all(p.grad is not None for p in codec.encoder.parameters())


def test_codes_file_round_trip(tmp_path):
    codec = small("encodec-24k")
    codes = codec.encode(synth_audio(0.3, 16000, batch=2), 16000, lengths=[4800, 3000])
    loaded = audiocodec.Codes.load(codes.save(tmp_path / "c.npz"))
    assert torch.equal(loaded.tokens, codes.tokens) and torch.equal(loaded.lengths, codes.lengths)
    assert torch.equal(codec.decode(loaded), codec.decode(codes))


def test_vocoder_resynthesis_shape():
    voc = audiocodec.build_vocoder("vocos-mel-24k", backbone={"num_layers": 2}).eval()
    wav = synth_audio(0.5).squeeze(1)
    mel = voc.mel(wav)
    assert mel.shape == (1, 100, 12000 // 256 + 1)
    assert voc.decode(mel).shape == (1, 1, 256 * (mel.shape[-1] - 1))


def test_decode_chunks_of_growing_codes_are_those_of_the_whole(native_cpu_convs):
    """Codec.decode_chunks: windows with look-back / look-ahead, their centres joined; fed codes that grow
    (final=False, then final=True), it yields the very chunks of the whole codes; bad arguments are refused."""
    torch.manual_seed(0)
    codec = audiocodec.build_codec("encodec-24k", quantizer={"num_quantizers": 2}, num_codebooks=2).eval()
    codes = torch.randint(0, codec.cardinality, (1, 2, 23))
    whole = list(codec.decode_chunks(codes, 5, 2))
    assert [stop for stop, _ in whole] == [5, 10, 15, 20, 23]
    hop = codec.hop_length
    assert all(a.shape == (1, 1, (stop - start) * hop)
               for (start, _), (stop, a) in zip([(0, None)] + whole[:-1], whole))
    window = codec.decode(codes[..., 3:12])          # chunk [5, 10) with 2 frames of context each side
    torch.testing.assert_close(whole[1][1], window[..., 2 * hop:7 * hop])
    grown, start = [], 0
    for n in (4, 9, 16, 23):
        for start, audio in codec.decode_chunks(codes[..., :n], 5, 2, start=start, final=False):
            grown.append((start, audio))
    assert [s for s, _ in grown] == [5, 10, 15, 20]   # the last chunk waits for the end (its look-ahead)
    for start, audio in codec.decode_chunks(codes, 5, 2, start=start):
        grown.append((start, audio))
    assert len(grown) == len(whole) and all(torch.equal(a, b) for (_, a), (_, b) in zip(grown, whole))
    wav = torch.randn(1, 1, 23 * hop - 100)          # Codes: all their frames, the last one whole
    coded = codec.encode(wav)
    joined = torch.cat([a for _, a in codec.decode_chunks(coded, 5, 2)], dim=-1)
    torch.testing.assert_close(joined, torch.cat([a for _, a in codec.decode_chunks(coded.tokens, 5, 2)], dim=-1))
    assert joined.shape[-1] == coded.tokens.shape[-1] * hop
    for bad in (dict(chunk_frames=0, context_frames=2), dict(chunk_frames=5, context_frames=-1),
                dict(chunk_frames=5, context_frames=2, start=24)):
        with pytest.raises(ValueError):
            list(codec.decode_chunks(codes, **bad))
