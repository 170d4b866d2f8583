"""GPU behaviour (run on a CUDA machine; skipped elsewhere): CUDA-graph replay and bf16 autocast give
the same codes and audio as the plain fp32 path; graphed LM decoding gives the same tokens as eager."""
import pytest
import torch

import audiocodec
from helpers import synth_audio

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _seeded(name):
    torch.manual_seed(0)
    codec = audiocodec.build_codec(name).prepare_for_inference().cuda()
    wav = synth_audio(2.0, batch=2, seed=1).cuda()
    with torch.no_grad():
        frames = codec.encoder(wav).transpose(1, 2).reshape(-1, codec.encoder.dimension)
        for layer in codec.quantizer.layers:
            book = layer.codebook
            book.embed.copy_(frames[torch.randint(0, frames.shape[0], (book.embed.shape[0],), device="cuda")])
            frames = frames - book.embed[torch.cdist(frames, book.embed).argmin(-1)]
    return codec


@cuda
@pytest.mark.parametrize("name", ["wavtokenizer-75", "encodec-24k"])
def test_cuda_graphs_match_eager(name):
    codec = _seeded(name)
    wav = synth_audio(1.5, batch=3, seed=2).cuda()
    ref_codes = codec.encode(wav)
    ref_audio = codec.decode(ref_codes)
    codec.use_cuda_graphs()
    for _ in range(3):  # capture, then replays
        codes = codec.encode(wav)
        audio = codec.decode(codes)
        assert torch.equal(codes.tokens, ref_codes.tokens)
        assert (audio - ref_audio).abs().max() < 1e-5
    other = synth_audio(0.7, batch=1, seed=3).cuda()  # a new shape gets its own graph
    codec.use_cuda_graphs(False)
    expected = codec.decode(codec.encode(other))
    codec.use_cuda_graphs()
    assert (codec.decode(codec.encode(other)) - expected).abs().max() < 1e-5


@cuda
def test_cuda_matches_cpu():
    codec = _seeded("wavtokenizer-75")
    wav = synth_audio(1.0, batch=2, seed=4)
    gpu = codec.encode(wav.cuda()).tokens.cpu()
    cpu = codec.cpu().encode(wav).tokens
    assert (gpu == cpu).float().mean() > 0.95  # cuDNN uses TF32 convolutions by default


@cuda
def test_nonfinite_gradient_step_is_skipped_on_the_device(tmp_path):
    """Fused AdamW on the GPU skips a step with a NaN gradient through ``found_inf`` (no host sync per
    step): that step leaves the weights as they were, and the skip is counted at the next log."""
    from audiocodec.train import Trainer
    config = {"name": "toy", "task": {"type": "toy_regression", "num_samples": 64, "val_samples": 0},
              "trainer": {"max_steps": 3, "batch_size": 8, "log_every": 1, "val_every": 0, "ckpt_every": 100,
                          "progress": False, "device": "cuda"},
              "optim": {"main": {"lr": 0.01}}}
    trainer = Trainer(config, run_dir=tmp_path / "run")
    trainer.fit(until_step=1)
    model = next(iter(trainer.task.modules.values()))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = [p.register_hook(lambda g: g * float("nan")) for p in model.parameters()]
    trainer.fit(until_step=2)
    for h in hooks:
        h.remove()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert trainer.skipped.get("main") == 1
    trainer.fit()
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


@cuda
@pytest.mark.parametrize("streams,cross", [(1, False), (3, True)])
def test_graphed_lm_decoding_matches_eager(streams, cross):
    from audiocodec.lm import TransformerLM, generate, left_padding_mask
    torch.manual_seed(0)
    model = TransformerLM(vocab_size=40, dim=64, num_layers=2, num_heads=4, num_kv_heads=2, num_codebooks=streams,
                          cross_attention=cross, init_std=0.2).cuda().eval()
    lengths = torch.tensor([6, 2, 4], device="cuda")
    prompts = torch.randint(0, 40, (3, streams, 6), device="cuda").masked_fill(
        ~left_padding_mask(lengths, 6)[:, None], 0)
    cond = dict(memory=torch.randn(3, 5, 64, device="cuda")) if cross else {}
    eager = generate(model, prompts, 40, prompt_lengths=lengths, **cond)
    graphed = generate(model, prompts, 40, prompt_lengths=lengths, cuda_graph=True, **cond)
    assert eager.tokens.unique().numel() > 5
    assert torch.equal(graphed.tokens, eager.tokens)


@cuda
def test_tts_with_cuda_graphs_speaks_the_same_tokens():
    """Batched and streamed synthesis replayed from CUDA graphs = eager (greedy; random small model, the
    embedded codec; EOS forbidden for 60 tokens so every row runs long)."""
    from audiocodec.text.tokenizers import build_tokenizer
    from audiocodec.tts import TTS, SynthesisOptions, TTSModel
    codec = audiocodec.load_codec(audiocodec.DEFAULT_CODEC, device="cuda")
    tok = build_tokenizer({"type": "char", "corpus": ["abcdefghijklmnopqrstuvwxyz .,?!'"]})
    vocab = {"text_size": tok.vocab_size, "speech_size": codec.cardinality, "num_codebooks": 1}
    info = {"model_id": codec.name, "fingerprint": codec.fingerprint(), "sample_rate": codec.sample_rate,
            "frame_rate": codec.frame_rate, "num_codebooks": 1, "cardinality": codec.cardinality}
    torch.manual_seed(0)
    model = TTSModel(vocab, {"dim": 64, "num_layers": 2, "num_heads": 4},
                     {"tokenizer": tok.to_dict(), "language": "en"}, info).cuda()
    texts = ["a short one.", "and a somewhat longer sentence here."]
    opts = dict(greedy=True, min_ratio=60 / 12, max_ratio=8.0)
    eager, graphed = TTS(model, codec, cuda_graphs=False), TTS(model, codec, cuda_graphs=True)
    a = eager.generate_tokens(texts, options=SynthesisOptions(**opts))
    b = graphed.generate_tokens(texts, options=SynthesisOptions(**opts))
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and a[0].shape[-1] >= 60
    sa = torch.cat(list(eager.synthesize(texts[0], stream=True, **opts)))
    sb = torch.cat(list(graphed.synthesize(texts[0], stream=True, **opts)))
    assert torch.equal(sa, sb)
