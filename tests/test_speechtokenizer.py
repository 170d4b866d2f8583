"""SpeechTokenizer / DM-Codec: the named config, official-checkpoint loading, and numeric parity with the
`speechtokenizer` package (random weights, EMA codebooks seeded with encoder frames so codes vary)."""
import json

import pytest
import torch

import audiocodec
from audiocodec.codecs.interop import speechtokenizer as st_interop
from audiocodec.codecs.interop.keys import adapt_weight_norm, rename_keys
from audiocodec.errors import CheckpointError, ConfigError
from audiocodec.nn.streaming import StreamingError
from audiocodec.semantic import SemanticRVQ, semantic_forward
from helpers import seed_euclidean_rvq, synth_audio

st = pytest.importorskip("speechtokenizer")

pytestmark = [pytest.mark.usefixtures("native_cpu_convs"),
              pytest.mark.filterwarnings("ignore:.*weight_norm.*is deprecated:FutureWarning")]

SR = 16000


def small_config(activation="ELU", **extra):
    """An official model config (config.json) small enough for CI."""
    return {"n_filters": 4, "strides": [8, 5, 4, 2], "dimension": 32, "semantic_dimension": 16,
            "bidirectional": True, "dilation_base": 2, "residual_kernel_size": 3, "n_residual_layers": 1,
            "lstm_layers": 2, "activation": activation, "codebook_size": 128, "n_q": 8, "sample_rate": SR,
            "distill_type": "d_axis", "mel_loss_lambdas": [45, 1, 1, 1], **extra}


def make_reference(tmp_path_factory, activation):
    torch.manual_seed(0)
    cfg = small_config(activation)
    model = st.SpeechTokenizer(cfg).eval()
    if activation == "Snake":  # the official init sets every alpha to 1: vary them so a mix-up would show
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("alpha"):
                    p.uniform_(0.5, 2.0)
    seed_euclidean_rvq(model.encoder, model.quantizer.vq.layers, synth_audio(1.5, SR, batch=2, seed=1))
    folder = tmp_path_factory.mktemp(f"speechtokenizer_{activation}")
    torch.save(model.state_dict(), folder / "SpeechTokenizer.pt")
    (folder / "config.json").write_text(json.dumps(cfg))
    return model, folder, cfg


@pytest.fixture(scope="module", params=["ELU", "Snake"])
def reference(request, tmp_path_factory):
    """(official model, folder with SpeechTokenizer.pt + config.json as released, its config)."""
    return make_reference(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def loaded(reference):
    model, folder, cfg = reference
    return audiocodec.load_codec(folder / "SpeechTokenizer.pt", config=folder / "config.json")


@pytest.mark.parametrize("n_q", [1, 2, 5, 8])
def test_codes_and_audio_match_official(reference, loaded, n_q):
    model, _, _ = reference
    wav = synth_audio(1.25, SR, batch=2, seed=2)  # 20000 samples: not a multiple of the hop (320)
    with torch.no_grad():
        ref_codes = model.encode(wav, n_q=n_q)                   # [K, B, T]
        ref_audio = model.decode(ref_codes)[..., : wav.shape[-1]]
    assert all(len(ref_codes[k].unique()) > 20 for k in range(n_q))  # the check means something only if codes vary
    loaded.set_num_codebooks(n_q)
    codes = loaded.encode(wav, SR)
    assert codes.tokens.shape == (2, n_q, 63)
    assert torch.equal(codes.tokens, ref_codes.transpose(0, 1))
    audio = loaded.decode(codes)
    assert audio.shape == ref_audio.shape
    assert (audio - ref_audio).abs().max() < 1e-4


def test_semantic_features_match_official(reference, loaded):
    """The official forward's ``feature`` (RVQ layer 0 through ``transform``) is our semantic head output."""
    model, _, _ = reference
    wav = synth_audio(1.0, SR, batch=2, seed=3)
    with torch.no_grad():
        ref_audio, _, ref_feature = model(wav, n_q=8)
        ours = semantic_forward(loaded, wav, n_q=8, routes={"speech": 0})
    assert ours.features["speech"].shape == ref_feature.shape == (2, 50, 16)
    assert (ours.features["speech"] - ref_feature).abs().max() < 1e-5
    assert (ours.output.audio - ref_audio[..., : wav.shape[-1]]).abs().max() < 1e-4
    assert len(ours.layers) == 8 and torch.allclose(sum(ours.layers), ours.output.latents, atol=1e-5)


def test_load_folder_and_without_config(reference, loaded):
    """The release folder (config.json found beside the weights), the bare weights file (sizes read off
    the tensors), and a training checkpoint of the official trainer give the same codec."""
    model, folder, cfg = reference
    wav = synth_audio(0.7, SR, batch=1, seed=4)
    loaded.set_num_codebooks(8)
    expected = loaded.encode(wav).tokens
    alone = folder.parent / (folder.name + "_alone")
    alone.mkdir()
    torch.save(model.state_dict(), alone / "weights.pt")
    torch.save({"generator": model.state_dict(), "discriminators": {}, "steps": 10}, alone / "trainer_ckpt.pt")
    for source in (folder, alone / "weights.pt", alone / "trainer_ckpt.pt"):
        codec = audiocodec.load_codec(source)
        assert codec.sample_rate == SR and codec.num_codebooks == 8 and codec.frame_rate == 50
        assert torch.equal(codec.encode(wav).tokens, expected), source
    read = st_interop.config_from_weights(model.state_dict())
    assert {k: read[k] for k in st_interop.MODEL_KEYS if k != "dilation_base"} == \
        {k: cfg[k] for k in st_interop.MODEL_KEYS if k != "dilation_base"}


def test_saved_codec_round_trip(loaded, tmp_path):
    """Our safetensors format keeps the new components (BiLSTM encoder, semantic head)."""
    path = audiocodec.save_codec(loaded, tmp_path / "st")
    again = audiocodec.load_codec(path)
    assert isinstance(again.quantizer, SemanticRVQ)
    wav = synth_audio(0.5, SR, seed=5)
    assert torch.equal(again.encode(wav).tokens, loaded.encode(wav).tokens)
    sd, sd2 = loaded.state_dict(), again.state_dict()
    assert torch.equal(sd["quantizer.semantic_head.weight"], sd2["quantizer.semantic_head.weight"])


def test_full_size_layout_matches_official():
    """The named config has exactly the official model's tensors (official model built on the meta device)."""
    with torch.device("meta"):
        ref = st.SpeechTokenizer(dict(st_interop.DEFAULTS))
    ours = audiocodec.build_codec("speechtokenizer")
    own = ours.state_dict()
    mapped = adapt_weight_norm(rename_keys(ref.state_dict(), st_interop.SPEECHTOKENIZER_RULES), own.keys())
    assert set(mapped) == set(own)
    assert [k for k in own if tuple(mapped[k].shape) != tuple(own[k].shape)] == []
    assert st_interop.config_from_weights(ref.state_dict()) == st_interop.DEFAULTS
    assert ours.sample_rate == 16000 and ours.hop_length == 320 and ours.frame_rate == 50
    assert (ours.num_codebooks, ours.cardinality, ours.bitrate) == (8, 1024, 4000)
    head = ours.quantizer.semantic_head
    assert (head.in_features, head.out_features) == (1024, 768)
    assert ours.encoder.model[13].lstm.bidirectional and not ours.decoder.model[1].lstm.bidirectional
    assert not ours.can_stream
    with pytest.raises(StreamingError):
        with ours.streaming():
            pass


def test_bad_checkpoints_and_configs(reference, tmp_path):
    model, folder, cfg = reference
    state = model.state_dict()
    # a config that does not fit the weights: the error names the keys
    bad = dict(small_config(), n_q=4)
    with pytest.raises(CheckpointError, match="unexpected key"):
        audiocodec.load_codec(folder / "SpeechTokenizer.pt", config=bad)
    # missing tensors
    partial = {k: v for k, v in state.items() if not k.startswith("decoder.model.0.")}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="missing key.*decoder"):
        audiocodec.load_codec(tmp_path / "partial.pt")
    # a config file that is neither official nor ours
    (tmp_path / "junk.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="neither"):
        st_interop.load_speechtokenizer_state(state, tmp_path / "junk.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read the config"):
        st_interop.load_speechtokenizer_state(state, tmp_path / "broken.json")
    with pytest.raises(ConfigError, match="unknown activation"):
        audiocodec.load_codec(folder / "SpeechTokenizer.pt", config=small_config("Swish"))


def test_encodec_files_are_not_taken_for_speechtokenizer(tmp_path):
    """Detection: an EnCodec state dict has the same key names but no semantic head and no BiLSTM."""
    encodec = pytest.importorskip("encodec")
    model = encodec.EncodecModel._get_model(target_bandwidths=[1.5, 3.0, 6.0], sample_rate=24000, channels=1, causal=True,
                                            model_norm="weight_norm", audio_normalize=False, name="encodec_24khz")
    assert not st_interop.is_speechtokenizer_state(model.state_dict())
    torch.save(model.state_dict(), tmp_path / "encodec.th")
    codec = audiocodec.load_codec(tmp_path / "encodec.th")
    assert codec.sample_rate == 24000 and not isinstance(codec.quantizer, SemanticRVQ)


def test_semantic_rvq_errors():
    codec = audiocodec.build_codec("speechtokenizer", num_codebooks=2, encoder={"n_filters": 2, "dimension": 16, "lstm": 1},
                                   decoder={"n_filters": 2, "dimension": 16, "lstm": 1},
                                   quantizer={"dim": 16, "num_quantizers": 2, "codebook_size": 8, "semantic_dim": 16})
    assert isinstance(codec.quantizer.semantic_head, torch.nn.Identity)  # official: Identity when sizes agree
    wav = synth_audio(0.2, SR, seed=6)
    with pytest.raises(ConfigError, match="uses only 1 codebooks"):
        semantic_forward(codec, wav, n_q=1, routes={"text": 1})
    with pytest.raises(audiocodec.AudioError, match=r"expected audio \[B, 1, L\]"):
        semantic_forward(codec, wav[0])
    with pytest.raises(ConfigError, match="RVQ layer must be in 0..1"):
        semantic_forward(codec, wav, routes={"text": 5})
    with pytest.raises(ConfigError, match="semantic_dim must be a positive integer"):
        audiocodec.build_codec("speechtokenizer", quantizer={"semantic_dim": 0})
    plain = audiocodec.build_codec("encodec-24k", encoder={"n_filters": 2}, decoder={"n_filters": 2})
    with pytest.raises(ConfigError, match="semantic_rvq"):
        semantic_forward(plain, synth_audio(0.1, 24000))
    per_teacher = audiocodec.build_codec("speechtokenizer", num_codebooks=2, encoder={"n_filters": 2, "dimension": 16, "lstm": 1},
                                         decoder={"n_filters": 2, "dimension": 16, "lstm": 1},
                                         quantizer={"dim": 16, "num_quantizers": 2, "codebook_size": 8,
                                                    "semantic_dim": {"speech": 12, "text": 20}})
    out = semantic_forward(per_teacher, wav, routes={"speech": 0, "text": 1})
    assert out.features["speech"].shape[-1] == 12 and out.features["text"].shape[-1] == 20
    with pytest.raises(ConfigError, match="no semantic head for teacher 'music'"):
        semantic_forward(per_teacher, wav, routes={"music": 0})
