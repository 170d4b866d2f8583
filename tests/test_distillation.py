"""Semantic distillation: losses (values on hand-made inputs, parity with the official formulas), teachers
through `transformers` (tiny random models), the feature cache, and tiny distilled codecs trained a few
steps with a speech teacher, a language teacher, and both."""
import json
import math
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

import audiocodec
from audiocodec.errors import ConfigError
from audiocodec.losses import CodecLoss
from audiocodec.losses.distillation import (DistillationLoss, d_axis_loss, distillation_loss, t_axis_loss)
from audiocodec.semantic import FeatureCache, precompute_features, semantic_forward
from helpers import synth_audio

transformers = pytest.importorskip("transformers")
from audiocodec.semantic import LanguageTeacher, SpeechTeacher  # noqa: E402

pytestmark = pytest.mark.usefixtures("native_cpu_convs")

SR = 16000
MIN_D = math.log1p(math.exp(-1))   # -log(sigmoid(1)): the loss when the cosines are all 1
HUBERT = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=(8,) * 7,
              num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz") + \
    ["the", "cat", "sat", "on", "mat", "dog", "##s"]
BERT = dict(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=64)
TEXTS = ["the cat sat on the mat", "the dogs sat"]


def tokenizer():
    return transformers.BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)})


@pytest.fixture(scope="module")
def speech_teacher():
    return SpeechTeacher.from_config(HUBERT, seed=0)


@pytest.fixture(scope="module")
def text_teacher():
    return LanguageTeacher.from_config(BERT, tokenizer(), seed=0)


# -- losses -----------------------------------------------------------------------------------------

def test_d_axis_values_on_hand_made_inputs():
    t = torch.tensor([[[1.0, 2.0], [0.0, -1.0], [3.0, 0.5]]])            # [B=1, T=3, D=2]
    assert d_axis_loss(t, t).item() == pytest.approx(MIN_D, abs=1e-6)      # identical: the minimum
    assert d_axis_loss(2.5 * t, t).item() == pytest.approx(MIN_D, abs=1e-6)  # scale along time does not matter
    assert d_axis_loss(-t, t).item() == pytest.approx(math.log1p(math.e), abs=1e-6)  # opposite: the maximum
    # channel 0 orthogonal in time (cos 0), channel 1 identical (cos 1): mean of log 2 and MIN_D
    s = torch.tensor([[[1.0, 5.0], [1.0, 6.0]]])
    g = torch.tensor([[[1.0, 5.0], [-1.0, 6.0]]])
    assert d_axis_loss(s, g).item() == pytest.approx((math.log(2) + MIN_D) / 2, abs=1e-6)
    # the cosine is along time, not over channels: matching frames up to a per-frame scale is not enough
    per_frame_scaled = t * torch.tensor([1.0, 3.0, 0.2])[None, :, None]
    assert d_axis_loss(per_frame_scaled, t).item() > MIN_D + 1e-3


def test_t_axis_values_on_hand_made_inputs():
    t = torch.tensor([[[1.0, 2.0], [0.0, -1.0]]])
    assert t_axis_loss(t, t).item() == pytest.approx(MIN_D, abs=1e-6)
    assert t_axis_loss(t, t, lambda_sim=3.0).item() == pytest.approx(3 * MIN_D, abs=1e-6)
    s, g = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]])    # L1 = 1, cos = 0
    assert t_axis_loss(s, g, lambda_sim=0.5).item() == pytest.approx(1 + 0.5 * math.log(2), abs=1e-6)


def test_losses_match_the_official_formulas():
    st_loss = pytest.importorskip("speechtokenizer.trainer.loss")
    g = torch.Generator().manual_seed(0)
    student, target = torch.randn(3, 40, 8, generator=g), torch.randn(3, 37, 8, generator=g)
    assert d_axis_loss(student, target).item() == pytest.approx(st_loss.d_axis_distill_loss(student, target).item(),
                                                                abs=1e-6)
    # t_axis: the official function calls torch.functional.l1_loss (missing); DM-Codec's fixed copy:
    n = 37
    expected = (torch.nn.functional.l1_loss(student[:, :n], target[:, :n]) + 0.7 * -torch.log(torch.sigmoid(
        torch.nn.functional.cosine_similarity(student[:, :n], target[:, :n], dim=-1))).mean())
    assert t_axis_loss(student, target, 0.7).item() == pytest.approx(expected.item(), abs=1e-6)


def test_lengths_crop_and_mask():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 10, 4, generator=g), torch.randn(2, 12, 4, generator=g)
    # length mismatch: both cut to the shorter, as the official code
    assert d_axis_loss(s, t).item() == pytest.approx(d_axis_loss(s, t[:, :10]).item(), abs=1e-7)
    # masks: the same as computing each item on its valid frames alone
    lengths = torch.tensor([10, 6])
    for fn in (d_axis_loss, t_axis_loss):
        masked = fn(s, t, lengths=lengths).item()
        if fn is d_axis_loss:  # mean over items of equal channel counts
            alone = (fn(s[:1], t[:1, :10]) + fn(s[1:, :6], t[1:, :6])) / 2
        else:                  # mean over the 16 valid frames
            alone = (fn(s[:1], t[:1, :10]) * 10 + fn(s[1:, :6], t[1:, :6]) * 6) / 16
        assert masked == pytest.approx(alone.item(), abs=1e-6), fn.__name__


def test_gradient_reaches_the_student_only():
    s = torch.randn(2, 5, 3, requires_grad=True)
    t = torch.randn(2, 5, 3, requires_grad=True)
    d_axis_loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_bad_inputs_are_named():
    s = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="feature sizes differ"):
        d_axis_loss(s, torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="batch sizes differ"):
        t_axis_loss(s, torch.randn(3, 5, 3))
    with pytest.raises(ValueError, match=r"\[B, T, D\]"):
        d_axis_loss(s[0], s[0])
    with pytest.raises(ValueError, match="no frames"):
        d_axis_loss(s[:, :0], s)
    with pytest.raises(ValueError, match="lengths must be >= 1"):
        d_axis_loss(s, s, lengths=torch.tensor([0, 3]))
    with pytest.raises(ConfigError, match="unknown distillation loss"):
        distillation_loss(s, s, kind="x_axis")


def test_distillation_loss_combines_and_routes():
    g = torch.Generator().manual_seed(2)
    s = {"speech": torch.randn(2, 8, 4, generator=g), "text": torch.randn(2, 8, 4, generator=g)}
    t = {"speech": torch.randn(2, 8, 4, generator=g), "text": torch.randn(2, 9, 4, generator=g)}
    ls, lt = d_axis_loss(s["speech"], t["speech"]), d_axis_loss(s["text"], t["text"])
    mean = DistillationLoss(preset="dm_codec")(s, t)
    assert mean.loss.item() == pytest.approx(((ls + lt) / 2).item(), abs=1e-6)   # DM-Codec: the average
    assert set(mean.terms) == {"distillation/speech", "distillation/text"}
    weighted = DistillationLoss({"speech": {"weight": 0.7}, "text": {"weight": 0.3, "layer": 1}}, combine="sum")
    out = weighted(s, t)
    assert out.loss.item() == pytest.approx((0.7 * ls + 0.3 * lt).item(), abs=1e-6)
    assert weighted.routes == {"speech": 0, "text": 1}
    t_kind = DistillationLoss(["speech"], kind="t_axis", lambda_sim=2.0)(s, t)
    assert t_kind.loss.item() == pytest.approx(t_axis_loss(s["speech"], t["speech"], 2.0).item(), abs=1e-6)
    assert DistillationLoss(preset="speechtokenizer").routes == {"speech": 0}
    with pytest.raises(KeyError, match="no target features for teacher"):
        DistillationLoss(preset="dm_codec")(s, {"speech": t["speech"]})
    with pytest.raises(ConfigError, match="unknown key"):
        DistillationLoss({"speech": {"layers": 1}})
    with pytest.raises(ConfigError, match="unknown distillation preset"):
        DistillationLoss(preset="hubert")
    with pytest.raises(ConfigError, match="layer must be"):
        DistillationLoss({"speech": {"layer": -1}})
    with pytest.raises(ConfigError, match="combine"):
        DistillationLoss(combine="max")


# -- teachers ---------------------------------------------------------------------------------------

def test_speech_teacher_matches_the_official_extraction(speech_teacher, tmp_path):
    """SpeechTokenizer's hubert_rep_extract.py: Wav2Vec2FeatureExtractor, then the mean of all hidden states."""
    wav = synth_audio(1.0, SR, batch=2, seed=3)
    out = speech_teacher(wav)
    fe = transformers.Wav2Vec2FeatureExtractor(do_normalize=True, sampling_rate=SR)
    with torch.no_grad():
        inputs = fe(list(wav[:, 0].numpy()), sampling_rate=SR, return_tensors="pt").input_values
        states = speech_teacher.model(inputs, output_hidden_states=True).hidden_states
    assert out.features.shape == (2, 49, 16) and out.lengths.tolist() == [49, 49]
    assert (out.features - torch.stack(states).mean(0)).abs().max() < 1e-4
    last = SpeechTeacher(speech_teacher.model, layer=-1)(wav).features
    assert (last - states[-1]).abs().max() < 1e-4
    with pytest.raises(ConfigError, match="out of range"):
        SpeechTeacher(speech_teacher.model, layer=7)
    # loaded from a local folder; do_normalize comes from its preprocessor config
    speech_teacher.model.save_pretrained(tmp_path / "hubert")
    (tmp_path / "hubert" / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    loaded = SpeechTeacher.from_pretrained(tmp_path / "hubert")
    assert loaded.normalize is False
    with torch.no_grad():
        raw = torch.stack(speech_teacher.model(wav[:, 0], output_hidden_states=True).hidden_states).mean(0)
    assert (loaded(wav).features - raw).abs().max() < 1e-4


def test_speech_teacher_rates_and_padding(speech_teacher):
    # a 24 kHz, 75 Hz codec: audio resampled to 16 kHz, features interpolated to 75 frames per second
    teacher = SpeechTeacher(speech_teacher.model, sample_rate=24000, frame_rate=75)
    out = teacher(synth_audio(2.0, 24000, seed=4))
    assert out.features.shape == (1, 148, 16) and int(teacher.output_frames(48000)) == 148
    # a padded batch: each item normalised on its own samples; the lengths say which frames are valid
    wav = synth_audio(1.0, SR, batch=2, seed=5)
    wav[1, :, 9600:] = 0
    out = speech_teacher(wav, lengths=[16000, 9600])
    assert out.lengths.tolist() == [49, 29]
    with pytest.raises(audiocodec.AudioError, match="lengths"):
        speech_teacher(wav, lengths=[16000, 0])
    with pytest.raises(audiocodec.AudioError, match="mono"):
        speech_teacher(torch.zeros(1, 2, 1600))
    with pytest.raises(audiocodec.AudioError):
        speech_teacher(torch.zeros(1, 1600, dtype=torch.int16))


def test_language_teacher_uses_dm_codec_length_handling(text_teacher):
    """One position per frame: tokens, then padding-token states up to the frame count; longer text is cut."""
    out = text_teacher(TEXTS, [50, 30])
    assert out.features.shape == (2, 50, 16) and out.lengths.tolist() == [50, 30]
    tok = tokenizer()
    enc = tok(TEXTS[0], padding="max_length", max_length=50, truncation=True, return_tensors="pt")
    with torch.no_grad():
        states = text_teacher.model(**enc, output_hidden_states=True).hidden_states
    assert (out.features[0] - torch.stack(states).mean(0)[0]).abs().max() < 1e-5
    short = text_teacher(TEXTS[0], 4)                       # [CLS] the cat [SEP]: truncated to 4 frames
    assert short.features.shape == (1, 4, 16)
    capped = text_teacher(TEXTS[0], 100)                    # beyond the 64 positions of this model
    assert capped.features.shape == (1, 64, 16) and capped.lengths.tolist() == [64]
    with pytest.raises(ConfigError, match="num_frames"):
        text_teacher(TEXTS, [10])
    with pytest.raises(ConfigError, match="transcripts"):
        text_teacher([1, 2], 10)


# -- cache ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Four wav files with transcripts and their manifest."""
    root = tmp_path_factory.mktemp("corpus")
    records = []
    for i, seconds in enumerate([1.0, 0.6, 1.3, 0.8]):
        wav = synth_audio(seconds, SR, seed=10 + i)[0, 0].numpy()
        sf.write(root / f"utt{i}.wav", wav, SR)
        records.append({"path": f"utt{i}.wav", "duration": seconds, "sample_rate": SR, "id": f"spk_utt{i}",
                        "text": TEXTS[i % 2]})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


class Counting:
    """A teacher wrapper counting the items it extracts."""

    def __init__(self, teacher):
        self.teacher, self.calls = teacher, 0
        self.dim, self.frame_rate, self.layer = teacher.dim, teacher.frame_rate, teacher.layer

    def extract(self, records):
        self.calls += len(records)
        return self.teacher.extract(records)


def test_cache_round_trip_and_resume(corpus, speech_teacher, tmp_path):
    manifest = corpus / "train.jsonl"
    out = tmp_path / "hubert_avg"
    first = Counting(speech_teacher)
    partial = precompute_features(manifest, first, out, shard_size=2, dtype="float32", max_items=3)
    assert first.calls == 3 and len(partial) == 3 and len(list(out.glob("shard-*.safetensors"))) == 2
    again = Counting(speech_teacher)                        # resumed: only the missing item is computed
    cache = precompute_features(manifest, again, out, shard_size=2, dtype="float32")
    assert again.calls == 1 and len(cache) == 4 and sorted(cache.ids()) == [f"spk_utt{i}" for i in range(4)]
    assert precompute_features(manifest, again, out, shard_size=2, dtype="float32") and again.calls == 1
    reader = FeatureCache(out)
    assert reader.frame_rate == 50 and reader.dim == 16 and reader.meta["layer"] == "avg"
    for i in range(4):
        rec = {"path": str(corpus / f"utt{i}.wav"), "duration": 1.0}
        expected = speech_teacher.extract([rec])[0]
        assert torch.equal(reader[f"spk_utt{i}"], expected)
    full = reader["spk_utt2"]                               # 1.3 s: 64 frames
    assert full.shape == (64, 16)
    assert torch.equal(reader.crop("spk_utt2", offset=0.5, num_frames=10), full[25:35])
    assert torch.equal(reader.crop("spk_utt2", offset=1.2, num_frames=10), full[54:64])  # moved back to fit
    batch = reader.batch(["spk_utt1", "spk_utt2"], [0.0, 0.1], num_frames=40)
    assert batch.features.shape == (2, 40, 16) and batch.lengths.tolist() == [29, 40]
    assert torch.equal(batch.features[0, :29], reader["spk_utt1"]) and batch.features[0, 29:].abs().sum() == 0
    clone = pickle.loads(pickle.dumps(reader))              # data-loader workers get a copy
    assert torch.equal(clone["spk_utt0"], reader["spk_utt0"])
    with pytest.raises(KeyError, match="no features for item 'nope'"):
        reader["nope"]
    # other features into the same folder are refused
    other = SpeechTeacher(speech_teacher.model, layer=1)
    with pytest.raises(ConfigError, match="holds other features"):
        precompute_features(manifest, other, out, shard_size=2, dtype="float32")


def test_cache_of_text_features_fp16_and_bad_files(corpus, text_teacher, tmp_path):
    records = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()]
    for r in records:
        r["path"] = str(corpus / r["path"])
    records.append({"path": str(corpus / "missing.wav"), "duration": 1.0, "sample_rate": SR, "id": "gone"})
    speech = SpeechTeacher.from_config(HUBERT, seed=0)
    cache = precompute_features(records, speech, tmp_path / "sm", shard_size=3)   # float16 storage
    assert "gone" not in cache and len(cache) == 4
    failed = [json.loads(line) for line in (tmp_path / "sm" / "failed.jsonl").read_text().splitlines()]
    assert [f["id"] for f in failed] == ["gone"] and "not found" in failed[0]["error"]
    exact = speech.extract([records[0]])[0]
    assert (cache["spk_utt0"] - exact).abs().max() < 1e-2 and cache["spk_utt0"].dtype == torch.float32
    lm = precompute_features(records[:4], text_teacher, tmp_path / "lm", shard_size=4)
    assert lm["spk_utt0"].shape == (50, 16) and lm["spk_utt1"].shape == (30, 16)   # ceil(duration * 50) frames
    same_stem = [{k: v for k, v in r.items() if k != "id"} for r in records[:1]] * 2   # ids from file names
    with pytest.raises(ConfigError, match="share the id 'utt0'"):
        precompute_features(same_stem, text_teacher, tmp_path / "dup")
    with pytest.raises(ConfigError, match="not a feature cache"):
        FeatureCache(tmp_path)


# -- training -----------------------------------------------------------------------------------------

def tiny_codec(semantic_dim=16, n_q=3):
    torch.manual_seed(0)
    return audiocodec.build_codec(
        "speechtokenizer", num_codebooks=n_q,
        encoder={"n_filters": 4, "dimension": 32, "lstm": 1}, decoder={"n_filters": 4, "dimension": 32, "lstm": 1},
        quantizer={"dim": 32, "num_quantizers": n_q, "codebook_size": 32, "kmeans_iters": 4,
                   "semantic_dim": semantic_dim}).train()


def train(codec, distill, targets, wav, steps=14):
    """A plain Adam loop with the SpeechTokenizer weights (45 mel, 500 L1, 10 commitment, 120 distillation);
    returns the distillation loss of every step."""
    loss_fn = CodecLoss(weights={"mel": 45, "l1": 500, "commitment": 10, "distillation": 120}, sample_rate=SR,
                        mel={"resolutions": [{"n_fft": 512, "hop_length": 120, "n_mels": 40}]})
    opt = torch.optim.Adam(codec.parameters(), lr=3e-3, betas=(0.9, 0.99))
    history = []
    for _ in range(steps):
        out = semantic_forward(codec, wav, routes=distill.routes)
        d = distill(out.features, targets)
        g = loss_fn.generator_loss(wav, out.output.audio, model_losses={**out.output.losses, "distillation": d.loss})
        opt.zero_grad()
        g.loss.backward()
        opt.step()
        history.append(d.loss.item())
        assert torch.isfinite(g.loss)
    return history


def falls(history):
    return np.mean(history[-3:]) < np.mean(history[:3]) - 0.05 and history[-1] < history[0]


def test_sm_guided_training_from_the_cache(corpus, speech_teacher, tmp_path):
    """SpeechTokenizer: HuBERT features (read back from the cache by item id and crop) -> RVQ layer 0."""
    cache = precompute_features(corpus / "train.jsonl", speech_teacher, tmp_path / "feats", shard_size=4)
    wav = torch.stack([torch.from_numpy(sf.read(corpus / f"utt{i}.wav", dtype="float32")[0][:8000]) for i in (0, 2)])
    targets = {"speech": cache.batch(["spk_utt0", "spk_utt2"], [0.0, 0.0], num_frames=25).features}
    history = train(tiny_codec(), DistillationLoss(preset="speechtokenizer"), targets, wav[:, None])
    assert falls(history), history


def test_lm_guided_training(text_teacher):
    """DM-Codec LM-guided: BERT states of the transcript, token i -> frame i."""
    wav = synth_audio(0.5, SR, batch=2, seed=6)
    targets = {"text": text_teacher(TEXTS, 25).features}
    history = train(tiny_codec(), DistillationLoss(preset="dm_codec_lm"), targets, wav)
    assert falls(history), history


def test_combined_training_with_routing(speech_teacher, text_teacher):
    """DM-Codec combined: both teachers, each on its own RVQ layer and with its own head, losses averaged."""
    wav = synth_audio(0.5, SR, batch=2, seed=7)
    targets = {"speech": speech_teacher(wav).features, "text": text_teacher(TEXTS, 25).features}
    distill = DistillationLoss({"speech": {"layer": 0}, "text": {"layer": 1}}, combine="mean")
    codec = tiny_codec(semantic_dim={"speech": 16, "text": 16})
    history = train(codec, distill, targets, wav)
    assert falls(history), history
    # the shared-head form (DM-Codec's default) trains too
    shared = train(tiny_codec(), DistillationLoss(preset="dm_codec"), targets, wav, steps=6)
    assert shared[-1] < shared[0]
