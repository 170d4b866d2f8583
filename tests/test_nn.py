"""Building blocks: padded convs (fast paths equal the reference padding), ISTFT lengths."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from audiocodec.nn import ISTFT, PaddedConv1d
from audiocodec.nn.conv import reflect_pad


@pytest.mark.parametrize("length,left,right", [(10, 3, 2), (100, 0, 5), (7, 6, 0), (5, 4, 4), (9, 0, 0)])
def test_reflect_pad_equals_torch(length, left, right):
    x = torch.randn(2, 3, length)
    assert torch.equal(reflect_pad(x, left, right), F.pad(x, (left, right), mode="reflect"))


@pytest.mark.parametrize("causal,mode", itertools.product([False, True], ["reflect", "constant", "replicate"]))
def test_long_input_conv_equals_padded_conv(causal, mode):
    """The copy-free path for long inputs gives the same frames as padding then convolving."""
    torch.manual_seed(0)
    for k, s, d in [(7, 1, 1), (3, 1, 3), (1, 1, 1), (4, 2, 1), (10, 5, 1), (16, 8, 1), (8, 4, 1)]:
        conv = PaddedConv1d(3, 4, k, stride=s, dilation=d, causal=causal, pad_mode=mode).double()
        for length in (4096, 4099, 5003):
            x = torch.randn(2, 3, length, dtype=torch.double)
            fast = conv(x)
            ref = torch.nn.Conv1d.forward(conv, conv.pad_input(x))
            assert fast.shape == ref.shape == (2, 4, -(-length // s))
            assert torch.allclose(fast, ref, atol=1e-12)


def test_long_input_conv_gradients_match():
    torch.manual_seed(0)
    conv = PaddedConv1d(2, 2, 7, pad_mode="reflect").double()
    x = torch.randn(1, 2, 5000, dtype=torch.double, requires_grad=True)
    g1, = torch.autograd.grad(conv(x).square().sum(), x)
    g2, = torch.autograd.grad(torch.nn.Conv1d.forward(conv, conv.pad_input(x)).square().sum(), x)
    assert torch.allclose(g1, g2, atol=1e-10)


@pytest.mark.parametrize("n_fft,hop", [(1280, 320), (2400, 600), (1024, 256)])
def test_istft_same_padding_length(n_fft, hop):
    spec = torch.randn(2, n_fft // 2 + 1, 37, dtype=torch.cfloat)
    assert ISTFT(n_fft, hop, padding="same")(spec).shape == (2, 37 * hop)


@pytest.mark.parametrize("n_fft,hop", [(1280, 320), (2400, 600), (1024, 256), (1000, 300)])
def test_istft_overlap_add_equals_the_definition(n_fft, hop):
    """The gather-and-add overlap-add (window a whole number of hops) and the F.fold fallback (1000 / 300) both
    give the windowed frames' overlap-add divided by the window-square envelope, trimmed to T * hop samples."""
    T = 23
    spec = torch.randn(2, n_fft // 2 + 1, T, dtype=torch.complex128)
    istft = ISTFT(n_fft, hop, padding="same").double()
    frames = torch.fft.irfft(spec, n_fft, dim=1) * istft.window[None, :, None]
    out_len, pad = (T - 1) * hop + n_fft, (n_fft - hop) // 2
    y = torch.zeros(2, out_len, dtype=torch.float64)
    env = torch.zeros(out_len, dtype=torch.float64)
    for t in range(T):   # the definition, frame by frame
        y[:, t * hop:t * hop + n_fft] += frames[:, :, t]
        env[t * hop:t * hop + n_fft] += istft.window.square()
    expected = (y / env.clamp_min(1e-11))[:, pad:out_len - pad]
    torch.testing.assert_close(istft(spec), expected, rtol=1e-12, atol=1e-12)
    if n_fft % hop == 0:   # the time-major form (CPU inference), its envelope cached per length
        for _ in range(2):
            torch.testing.assert_close(istft.time_major(spec.transpose(1, 2)), expected, rtol=1e-12, atol=1e-12)
        shorter = istft.time_major(spec[:, :, :T - 5].transpose(1, 2))
        torch.testing.assert_close(shorter, istft(spec[:, :, :T - 5]), rtol=1e-12, atol=1e-12)
