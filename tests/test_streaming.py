"""Streaming encode / decode of causal codecs equals offline encode / decode of the whole signal."""
import itertools

import pytest
import torch

import audiocodec
from audiocodec.nn.streaming import StreamingError, stream_step, streaming
from helpers import seed_euclidean_rvq, synth_audio

HOP = 320


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    codec = audiocodec.build_codec("encodec-24k").eval()
    seed_euclidean_rvq(codec.encoder, codec.quantizer.layers, synth_audio(2.0, batch=2, seed=1))
    return codec


@pytest.fixture(scope="module")
def wav():
    return synth_audio(1.0, batch=2, seed=3)[..., : 24000 - 111]  # 75 frames, the last one partial


def split(x, sizes):
    """Consecutive chunks of ``x`` along time, cycling through ``sizes``."""
    chunks, i = [], 0
    for n in itertools.cycle(sizes):
        if i >= x.shape[-1]:
            return chunks
        chunks.append(x[..., i: i + n])
        i += n


def stream_encode(codec, wav, sizes, last_with_data=False):
    chunks = split(wav, sizes)
    if last_with_data:  # the last chunk comes with last=True
        return [codec.encode_chunk(c) for c in chunks[:-1]] + [codec.encode_chunk(chunks[-1], last=True)]
    return [codec.encode_chunk(c) for c in chunks] + [codec.encode_chunk(None, last=True)]


def stream_decode(codec, tokens, sizes):
    out = [codec.decode_chunk(c) for c in split(tokens, sizes)]
    out.append(codec.decode_chunk(None, last=True))
    return out


@pytest.mark.parametrize("sizes,last_with_data", [
    ([3 * HOP, HOP, 7 * HOP, 2 * HOP], False),          # whole frames, irregular
    ([1000, 1, 4567, HOP, 77, 2 * HOP + 5], True),      # any sample counts (buffered)
])
def test_stream_encode_equals_offline(codec, wav, sizes, last_with_data):
    ref = codec.encode(wav).tokens
    assert all(len(ref[:, k].unique()) > 20 for k in range(ref.shape[1]))  # codes vary
    with codec.streaming(batch_size=2):
        chunks = stream_encode(codec, wav, sizes, last_with_data)
    codes = torch.cat(chunks, dim=-1)
    assert codes.shape == ref.shape == (2, 8, 75)
    assert torch.equal(codes, ref)


def test_stream_encode_latency(codec, wav):
    """After the start-up (reflect padding of the first samples), a frame comes out with its last sample."""
    with codec.streaming():
        counts = [codec.encode_chunk(c).shape[-1] for c in split(wav[..., : 40 * HOP], [HOP])]
        assert codec.encode_chunk(None, last=True).shape[-1] == 0  # nothing held back at a frame boundary
    first = next(i for i, n in enumerate(counts) if n)
    assert first == 6 and counts[first] == 7  # frames 0-6 wait for the final conv's reflect context
    assert all(n == 1 for n in counts[first + 1:])


def test_stream_decode_equals_offline(codec, wav):
    tokens = codec.encode(wav).tokens
    ref = codec.decode(tokens)
    with codec.streaming(batch_size=2):
        chunks = stream_decode(codec, tokens, [3, 1, 7, 2, 5])
    audio = torch.cat(chunks, dim=-1)
    assert audio.shape == ref.shape == (2, 1, 75 * HOP)
    assert (audio - ref).abs().max() < 1e-4
    # the first conv's reflect padding holds output back until 7 frames are in; then t frames -> t * hop
    sizes = [c.shape[-1] for c in chunks]
    assert sizes[:3] == [0, 0, 11 * HOP] and sizes[-1] == 0
    assert sizes[3:-1] == [HOP * len(c) for c in split(torch.zeros(75 - 11), [2, 5, 3, 1, 7])]


def test_stream_round_trip(codec, wav):
    """Encode and decode chunk by chunk in one loop, as a live link would."""
    ref = codec.decode(codec.encode(wav).tokens)
    with codec.streaming(batch_size=2):
        out = [codec.decode_chunk(codec.encode_chunk(c)) for c in split(wav, [HOP * 2, 700, HOP])]
        out.append(codec.decode_chunk(codec.encode_chunk(None, last=True), last=True))
    audio = torch.cat(out, dim=-1)
    assert audio.shape == ref.shape
    assert (audio - ref).abs().max() < 1e-4


@pytest.mark.parametrize("length", [1, 100, HOP, 3 * HOP + 17, 7 * HOP])
def test_short_streams(codec, length):
    """Streams shorter than the start-up are flushed by the last call, exactly as offline."""
    wav = synth_audio(0.5, batch=1, seed=4)[..., :length]
    ref = codec.encode(wav).tokens
    with codec.streaming():
        codes = torch.cat(stream_encode(codec, wav, [50, 130], last_with_data=length > 100), dim=-1)
        assert torch.equal(codes, ref)
        audio = torch.cat(stream_decode(codec, codes, [1, 2]), dim=-1)
    ref_audio = codec.decode(ref)
    assert audio.shape == ref_audio.shape == (1, 1, ref.shape[-1] * HOP)
    assert (audio - ref_audio).abs().max() < 1e-4


def test_state_reset_between_streams(codec, wav):
    other = synth_audio(0.6, batch=2, seed=7)
    ref_a, ref_b = codec.encode(wav).tokens, codec.encode(other).tokens
    with codec.streaming(batch_size=2):
        # last=True ends a stream: the next chunk starts a fresh one
        assert torch.equal(torch.cat(stream_encode(codec, wav, [HOP * 3]), -1), ref_a)
        assert torch.equal(torch.cat(stream_encode(codec, other, [HOP * 5]), -1), ref_b)
        # reset_streaming() drops a stream half way
        codec.encode_chunk(wav[..., : 10 * HOP])
        codec.decode_chunk(ref_a[..., :9])
        codec.reset_streaming()
        assert torch.equal(torch.cat(stream_encode(codec, other, [HOP * 4]), -1), ref_b)
        audio = torch.cat(stream_decode(codec, ref_b, [4]), -1)
        assert (audio - codec.decode(ref_b)).abs().max() < 1e-4
        codec.encode_chunk(wav[..., :HOP * 9])  # left unfinished: leaving the context drops it
    with codec.streaming():
        assert torch.equal(torch.cat(stream_encode(codec, other, [HOP * 6]), -1), ref_b)
    # offline use is unaffected by streaming
    assert not codec.is_streaming
    assert torch.equal(codec.encode(wav).tokens, ref_a)


def test_streaming_after_weight_norm_folding(codec, wav):
    import copy
    folded = copy.deepcopy(codec).prepare_for_inference()
    with folded.streaming():
        codes = torch.cat(stream_encode(folded, wav, [HOP * 7, 99]), -1)
    assert torch.equal(codes, codec.encode(wav).tokens)


def test_streaming_errors(codec, wav):
    with pytest.raises(StreamingError, match="not streaming"):
        codec.encode_chunk(wav[..., :HOP])
    with codec.streaming(batch_size=2):
        with pytest.raises(StreamingError, match="batch of 2"):
            codec.encode_chunk(wav[:1, :, :HOP])
        with pytest.raises(StreamingError, match="already streaming"):
            with codec.streaming():
                pass
        with pytest.raises(audiocodec.CodesError):
            codec.decode_chunk(torch.full((2, 8, 3), 5000))
    with codec.streaming():
        with pytest.raises(StreamingError, match="no batch_size"):
            codec.encode_chunk(None, last=True)
    assert not codec.is_streaming and codec.can_stream


@pytest.mark.parametrize("name,part", [("wavtokenizer-75", "encoder"), ("vocos-encodec-24k", "decoder")])
def test_non_causal_codecs_cannot_stream(name, part):
    small = {"decoder": {"backbone": {"num_layers": 1}}}
    codec = audiocodec.build_codec(name, **small)
    assert not codec.can_stream
    assert part in codec.streaming_unsupported_reason()
    with pytest.raises(StreamingError, match=r"cannot stream.*encode\(\) / decode\(\)"):
        with codec.streaming():
            pass
    assert not codec.is_streaming


def test_module_level_streaming():
    """Any stack of causal SEANet-style modules streams through audiocodec.nn.streaming, not just a Codec."""
    from audiocodec.nn.conv import build_conv1d, build_conv_transpose1d
    from audiocodec.nn.seanet import SEANetResnetBlock, SLSTM
    torch.manual_seed(0)
    net = torch.nn.Sequential(build_conv1d(3, 8, 5, stride=3, causal=True, pad_mode="replicate"),
                              SEANetResnetBlock(8, causal=True, true_skip=False), torch.nn.GELU(), SLSTM(8),
                              build_conv_transpose1d(8, 4, 9, stride=2, causal=True),
                              build_conv1d(4, 2, 3, dilation=2, causal=True, pad_mode="constant"))
    x = torch.randn(2, 3, 301)
    with torch.no_grad():
        ref = net(x)
        with streaming(net):
            out = [net(c) for c in split(x, [1, 13, 4, 40])] + [stream_step(net, x[..., :0], final=True)]
    out = torch.cat(out, -1)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() < 1e-5
    with pytest.raises(StreamingError, match=r"1: non-causal conv"):
        with streaming(torch.nn.Sequential(torch.nn.ELU(), build_conv1d(3, 8, 5))):
            pass
    with pytest.raises(StreamingError, match="bidirectional"):
        with streaming(SLSTM(8, bidirectional=True)):
            pass
