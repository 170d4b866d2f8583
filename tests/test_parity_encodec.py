"""Numeric parity with the `encodec` package (random weights, codebooks seeded with real frames)."""
import dataclasses

import pytest
import torch

import audiocodec
from helpers import assert_rvq_codes_match, seed_euclidean_rvq, synth_audio

encodec = pytest.importorskip("encodec")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(reference model, path of its state dict saved as the `encodec` package saves it)."""
    torch.manual_seed(0)
    model = encodec.EncodecModel._get_model(target_bandwidths=[1.5, 3, 6, 12, 24], sample_rate=24000, channels=1,
                                             causal=True, model_norm="weight_norm", audio_normalize=False,
                                             name="encodec_24khz").eval()
    seed_euclidean_rvq(model.encoder, model.quantizer.vq.layers, synth_audio(2.0, batch=2, seed=1))
    path = tmp_path_factory.mktemp("encodec") / "encodec_24khz.th"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.mark.parametrize("bandwidth,n_q", [(1.5, 2), (6.0, 8), (24.0, 32)])
def test_codes_and_audio_match(reference, bandwidth, n_q):
    reference, path = reference
    wav = synth_audio(1.3, batch=2, seed=2)
    reference.set_target_bandwidth(bandwidth)
    with torch.no_grad():
        ref_codes = torch.cat([f[0] for f in reference.encode(wav)], dim=-1)  # [B, K, T]
        ref_audio = reference.decode([(ref_codes, None)])[..., : wav.shape[-1]]
        latents = reference.encoder(wav)
    # the parity check means something only if the reference codes vary
    assert all(len(ref_codes[:, k].unique()) > 20 for k in range(n_q))

    ours = audiocodec.load_codec(path)
    ours.set_num_codebooks(n_q)
    codes = ours.encode(wav, 24000)
    books = [layer._codebook.embed for layer in reference.quantizer.vq.layers[:n_q]]
    assert_rvq_codes_match(codes.tokens, ref_codes, latents, books)
    audio = ours.decode(dataclasses.replace(codes, tokens=ref_codes))   # the reference's codes, our input lengths
    assert audio.shape == ref_audio.shape
    assert (audio - ref_audio).abs().max() < 1e-4



def test_a_model_with_fewer_than_eight_codebooks_loads(tmp_path):
    """An EnCodec trained only up to 3 kbps holds 4 codebooks: it loads and matches at its full rate."""
    torch.manual_seed(1)
    model = encodec.EncodecModel._get_model(target_bandwidths=[1.5, 3], sample_rate=24000, channels=1,
                                             causal=True, model_norm="weight_norm", audio_normalize=False,
                                             name="encodec_24khz").eval()
    seed_euclidean_rvq(model.encoder, model.quantizer.vq.layers[:4], synth_audio(2.0, batch=2, seed=1))
    torch.save(model.state_dict(), tmp_path / "small.th")
    ours = audiocodec.load_codec(tmp_path / "small.th")
    assert ours.max_codebooks == 4 and ours.num_codebooks == 4
    wav = synth_audio(1.0, batch=1, seed=3)
    model.set_target_bandwidth(3.0)
    with torch.no_grad():
        ref = torch.cat([f[0] for f in model.encode(wav)], dim=-1)
        latents = model.encoder(wav)
    books = [layer._codebook.embed for layer in model.quantizer.vq.layers[:4]]
    assert_rvq_codes_match(ours.encode(wav, 24000).tokens, ref, latents, books)
