"""Numeric parity with the `vocos` package: the mel vocoder and the EnCodec-features model
(random weights; codebooks seeded with real encoder frames so codes vary)."""
import pytest
import torch

import audiocodec
from helpers import seed_euclidean_rvq, synth_audio

vocos = pytest.importorskip("vocos")
encodec = pytest.importorskip("encodec")
from vocos.feature_extractors import EncodecFeatures, MelSpectrogramFeatures  # noqa: E402
from vocos.heads import ISTFTHead  # noqa: E402
from vocos.models import VocosBackbone  # noqa: E402


def _randomize(module, seed):
    """Give LayerNorm / AdaLN tables non-trivial values so they are really compared."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name or "gamma" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def test_mel_vocoder_matches(tmp_path):
    torch.manual_seed(0)
    ref = vocos.Vocos(MelSpectrogramFeatures(sample_rate=24000, n_fft=1024, hop_length=256, n_mels=100),
                      VocosBackbone(input_channels=100, dim=512, intermediate_dim=1536, num_layers=8),
                      ISTFTHead(dim=512, n_fft=1024, hop_length=256, padding="center")).eval()
    _randomize(ref, 1)
    path = tmp_path / "pytorch_model.bin"
    torch.save(ref.state_dict(), path)
    ours = audiocodec.load_vocoder(path)

    wav = synth_audio(1.0, batch=2, seed=3).squeeze(1)
    with torch.no_grad():
        ref_mel = ref.feature_extractor(wav)
        ref_audio = ref.decode(ref_mel)
        mel = ours.mel(wav)
        audio = ours.decode(mel).squeeze(1)
    assert torch.allclose(mel, ref_mel, atol=1e-5)
    assert audio.shape == ref_audio.shape
    assert (audio - ref_audio).abs().max() < 1e-4


@pytest.fixture(scope="module")
def vocos_encodec(tmp_path_factory):
    """A random-weight Vocos EnCodec-features model built without any download."""
    def untrained_24khz(pretrained=True, repository=None):
        return encodec.EncodecModel._get_model([1.5, 3.0, 6.0, 12.0, 24.0], 24000, 1, True, "weight_norm",
                                               False, None, "encodec_24khz")
    mp = pytest.MonkeyPatch()
    mp.setattr(encodec.EncodecModel, "encodec_model_24khz", staticmethod(untrained_24khz))
    torch.manual_seed(0)
    fe = EncodecFeatures("encodec_24khz", bandwidths=[1.5, 3.0, 6.0, 12.0])
    mp.undo()
    seed_euclidean_rvq(fe.encodec.encoder, fe.encodec.quantizer.vq.layers, synth_audio(2.0, batch=2, seed=1))
    with torch.no_grad():  # the decoder's own code embeddings: the seeded codebooks, perturbed
        books = torch.cat([vq._codebook.embed for vq in fe.encodec.quantizer.vq.layers[:16]])
        fe.codebook_weights.copy_(books + 0.01 * torch.randn_like(books))
    ref = vocos.Vocos(fe, VocosBackbone(input_channels=128, dim=384, intermediate_dim=1152, num_layers=8,
                                        adanorm_num_embeddings=4),
                      ISTFTHead(dim=384, n_fft=1280, hop_length=320, padding="same")).eval()
    _randomize(ref.backbone, 2)
    path = tmp_path_factory.mktemp("vocos") / "pytorch_model.bin"
    torch.save(ref.state_dict(), path)
    return ref, path


@pytest.mark.parametrize("bandwidth_id,n_q", [(0, 2), (2, 8), (3, 16)])
def test_encodec_vocos_matches(vocos_encodec, bandwidth_id, n_q):
    ref, path = vocos_encodec
    wav = synth_audio(1.0, batch=2, seed=4).squeeze(1)
    bid = torch.tensor([bandwidth_id])
    with torch.no_grad():
        ref.feature_extractor.encodec.set_target_bandwidth(ref.feature_extractor.bandwidths[bandwidth_id])
        ref_codes = ref.feature_extractor.get_encodec_codes(wav).transpose(0, 1)  # [B, K, T]
        ref_audio = ref(wav, bandwidth_id=bid)
    assert all(len(ref_codes[:, k].unique()) > 20 for k in range(n_q))

    ours = audiocodec.load_codec(path).set_num_codebooks(n_q)
    codes = ours.encode(wav[:, None], 24000)
    assert torch.equal(codes.tokens, ref_codes)
    audio = ours.decode(codes).squeeze(1)
    assert audio.shape == ref_audio.shape
    assert (audio - ref_audio).abs().max() < 1e-4
