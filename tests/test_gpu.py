"""GPU behaviour (run on a CUDA machine; skipped elsewhere): CUDA-graph replay and bf16 autocast give
the same codes and audio as the plain fp32 path; graphed LM decoding gives the same tokens as eager."""
import pytest
import torch

import audiocodec
from audiocodec.nn import vocos
from audiocodec.quantize.vq import seed_codebooks_from_latents
from helpers import probe_compiled_paths, synth_audio

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _seeded(name):
    torch.manual_seed(0)
    codec = audiocodec.build_codec(name).prepare_for_inference().cuda()
    wav = synth_audio(2.0, batch=2, seed=1).cuda()
    with torch.no_grad():
        frames = codec.encoder(wav).transpose(1, 2).reshape(-1, codec.encoder.dimension)
    seed_codebooks_from_latents(codec.quantizer.layers, frames)
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
@pytest.mark.parametrize("name", ["wavtokenizer-75", "encodec-24k"])
@pytest.mark.parametrize("bf16", [False, True])
def test_cuda_time_major_convs_match_the_default_path(monkeypatch, name, bf16):
    """PaddedConv1d.cuda_time_major (channels-last cuDNN convs in eager inference): the same codes and latents
    up to float rounding, under CUDA graphs too."""
    from audiocodec.nn.conv import PaddedConv1d
    codec = _seeded(name)
    wav = synth_audio(1.5, batch=3, seed=2).cuda()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        ref_latents, ref_codes = codec.encoder(wav).float(), codec.encode(wav).tokens
        monkeypatch.setattr(PaddedConv1d, "cuda_time_major", True)
        latents = codec.encoder(wav).float()
        assert latents.stride(1) == 1   # the time-major layout reached the output
        assert (latents - ref_latents).norm() / ref_latents.norm() < (2e-2 if bf16 else 1e-3)
        assert (codec.encode(wav).tokens == ref_codes).float().mean() > (0.97 if bf16 else 0.99)
        codec.use_cuda_graphs()
        for _ in range(2):
            assert (codec.encode(wav).tokens == ref_codes).float().mean() > (0.97 if bf16 else 0.99)


@cuda
@pytest.mark.parametrize("bf16", [False, True])
def test_compiled_codec_matches_eager(monkeypatch, bf16):
    """Codec.compile() for CUDA inference with ConvNeXtBlock.compiled_taps (the depthwise convs as shifted taps, any
    dtype), PaddedConv1d.compiled_channels_last (bf16: the convs, the pos_net's too, as channels-last conv2d) and
    AttnBlock.cuda_matmul_attention (bf16: two matmuls): the eager codes and audio up to float rounding, under
    CUDA graphs too."""
    traced = probe_compiled_paths(monkeypatch)
    codec = _seeded("wavtokenizer-75")
    wav = synth_audio(1.5, batch=3, seed=2).cuda()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        ref_codes = codec.encode(wav)
        ref_audio = codec.decode(ref_codes).float()
        codec.compile(dynamic=False)
        for graphs in (False, True):
            codec.use_cuda_graphs(graphs)
            for _ in range(2):
                codes = codec.encode(wav).tokens
                audio = codec.decode(ref_codes).float()
                assert (codes == ref_codes.tokens).float().mean() > (0.97 if bf16 else 0.99)
                assert (audio - ref_audio).norm() / ref_audio.norm() < (3e-2 if bf16 else 1e-3)  # wrong paths: O(1)
    assert "taps" in traced and (("channels_last" in traced) == bf16) and (("matmul_attention" in traced) == bf16)


@cuda
@pytest.mark.parametrize("parts,tol,convs", [(3, 2e-5, False), (2, 2e-4, False), (3, 2e-5, True)])
def test_split_bf16_gemms_decode_as_the_fp32_gemms(monkeypatch, parts, tol, convs):
    """VocosBackbone.cuda_split_bf16_gemms (compiled fp32 CUDA inference: the MLP's GEMMs as bf16 tensor-core GEMMs
    of split operands), and with ``convs`` cuda_split_bf16_convs too: the compiled decode of the fp32 products up to
    their rounding (cuDNN's convs without TF32 for the reference), under CUDA graphs too; a split that lost its low
    parts would be off by ~1e-3."""
    codec = _seeded("wavtokenizer-75")
    codes = codec.encode(synth_audio(1.5, batch=3, seed=2).cuda())
    monkeypatch.setattr(vocos.VocosBackbone, "cuda_split_bf16_gemms", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    with torch.no_grad():
        eager = codec.decode(codes)
        codec.compile(dynamic=False)
        ref = codec.decode(codes)
        monkeypatch.setattr(vocos.VocosBackbone, "cuda_split_bf16_gemms", True)
        monkeypatch.setattr(vocos.VocosBackbone, "cuda_split_bf16_convs", convs)
        monkeypatch.setattr(vocos.VocosBackbone, "split_bf16_parts", parts)
        torch._dynamo.reset()  # traced again with the switch on
        runs = [codec.decode(codes)]
        codec.use_cuda_graphs()
        runs += [codec.decode(codes) for _ in range(2)]
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    for audio in runs:
        assert rel(audio, ref) < tol and rel(audio, eager) < 1e-3
    cache = codec.decoder.backbone.__dict__["_layout_cache"]
    assert f"split_bf16_{parts}_23" in cache  # the split path ran, for the 12 blocks' 24 GEMMs
    assert (f"split_bf16_{parts}_36" in cache) == convs  # and the input conv, 8 pos_net convs, 4 projections


@cuda
def test_matmul_attention_decodes_as_the_fused_attention(monkeypatch):
    """AttnBlock.cuda_matmul_attention under bf16 autocast: the audio of PyTorch's attention in bf16 and within
    bf16 rounding of the fp32 decode."""
    codec = _seeded("wavtokenizer-75")
    codes = codec.encode(synth_audio(1.5, batch=3, seed=2).cuda())
    with torch.no_grad():
        ref = codec.decode(codes)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fused = codec.decode(codes).float()
            monkeypatch.setattr(vocos.AttnBlock, "cuda_matmul_attention", True)
            matmuls = codec.decode(codes).float()
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    assert rel(matmuls, fused) < 3e-2 and rel(matmuls, ref) < 3e-2  # a wrong attention: O(1)


@cuda
@pytest.mark.parametrize("name,share", [("wavtokenizer-75", 0.999), ("encodec-24k", 0.99)])
@pytest.mark.parametrize("bf16", [False, True])
def test_split_bf16_search_gives_the_fp32_search_codes(monkeypatch, name, share, bf16):
    """EuclideanCodebook.cuda_split_bf16_search (the VQ search as one bf16 tensor-core GEMM of split operands): the
    codes of the fp32 search on nearly every frame (all of a frame's RVQ codes compared), under CUDA graphs too."""
    from audiocodec.quantize.vq import EuclideanCodebook
    codec = _seeded(name)
    wav = synth_audio(1.5, batch=3, seed=2).cuda()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        ref = codec.encode(wav).tokens
        monkeypatch.setattr(EuclideanCodebook, "cuda_split_bf16_search", True)
        runs = [codec.encode(wav).tokens]
        codec.use_cuda_graphs()
        runs += [codec.encode(wav).tokens for _ in range(2)]
    for codes in runs:
        assert (codes == ref).all(1).float().mean() >= share


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
def test_fused_bias_leaky_relu_discriminators_match_the_plain_path(monkeypatch):
    """Conv2dLeakyReLU.fused_cuda (bias-free cuDNN conv, then one compiled bias + LeakyReLU kernel) on the
    WavTokenizer discriminators in NHWC under bf16 autocast: the logits, feature maps and parameter gradients
    of the plain path (bf16 tolerance), and the fused kernel really ran."""
    from audiocodec.discriminators import MultiDiscriminator
    from audiocodec.discriminators.common import Conv2dLeakyReLU, compiled_bias_leaky_relu
    from audiocodec.train.trainer import _input_channels_last
    torch.manual_seed(0)
    disc = MultiDiscriminator([{"type": "mpd", "periods": [2, 3], "channels": [32, 64, 128, 128, 128]},
                               {"type": "mrd"}, {"type": "dac", "periods": [5], "window": "rect"}]).cuda()
    for m in disc.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_pre_hook(_input_channels_last)
    wav = (0.3 * torch.randn(4, 1, 24000)).cuda()
    runs = []
    for fused in (False, True):
        monkeypatch.setattr(Conv2dLeakyReLU, "fused_cuda", fused)
        disc.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits, fmaps = disc(wav)
            loss = sum(lg.float().mean() for lg in logits) + sum(f.float().abs().mean() for fm in fmaps for f in fm)
        loss.backward()
        runs.append(([lg.float() for lg in logits], [f.float() for fm in fmaps for f in fm],
                     {n: p.grad.clone() for n, p in disc.named_parameters()}))
    assert compiled_bias_leaky_relu.cache_info().hits + compiled_bias_leaky_relu.cache_info().misses > 0
    (logits, maps, grads), (f_logits, f_maps, f_grads) = runs
    for a, b in zip(logits + maps, f_logits + f_maps):
        assert (a - b).abs().mean() <= 2e-2 * a.abs().mean() + 1e-4
    for n in grads:
        a, b = grads[n], f_grads[n]
        assert (a - b).norm() <= 5e-2 * a.norm() + 1e-6, n


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


def _tiny_tts():
    """The embedded codec and a random 2-layer TTS over its tokens, on CUDA."""
    from audiocodec.text.tokenizers import build_tokenizer
    from audiocodec.tts import TTSModel
    codec = audiocodec.load_codec(audiocodec.DEFAULT_CODEC, device="cuda")
    tok = build_tokenizer({"type": "char", "corpus": ["abcdefghijklmnopqrstuvwxyz .,?!'"]})
    vocab = {"text_size": tok.vocab_size, "speech_size": codec.cardinality, "num_codebooks": 1}
    info = {"model_id": codec.name, "fingerprint": codec.fingerprint(), "sample_rate": codec.sample_rate,
            "frame_rate": codec.frame_rate, "num_codebooks": 1, "cardinality": codec.cardinality}
    torch.manual_seed(0)
    model = TTSModel(vocab, {"dim": 64, "num_layers": 2, "num_heads": 4},
                     {"tokenizer": tok.to_dict(), "language": "en"}, info).cuda()
    return codec, model


@cuda
def test_tts_with_cuda_graphs_speaks_the_same_tokens():
    """Batched and streamed synthesis replayed from CUDA graphs = eager (greedy; random small model, the
    embedded codec; EOS forbidden for 60 tokens so every row runs long)."""
    from audiocodec.tts import TTS, SynthesisOptions
    codec, model = _tiny_tts()
    texts = ["a short one.", "and a somewhat longer sentence here."]
    opts = dict(greedy=True, min_ratio=60 / 12, max_ratio=8.0)
    eager, graphed = TTS(model, codec, cuda_graphs=False), TTS(model, codec, cuda_graphs=True)
    a = eager.generate_tokens(texts, options=SynthesisOptions(**opts))
    b = graphed.generate_tokens(texts, options=SynthesisOptions(**opts))
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and a[0].shape[-1] >= 60
    sa = torch.cat(list(eager.synthesize(texts[0], stream=True, **opts)))
    sb = torch.cat(list(graphed.synthesize(texts[0], stream=True, **opts)))
    assert torch.equal(sa, sb)


# -- the whole decoding step in one CUDA graph (generate(cuda_graph=True) with graph-safe hooks) ---------------

#: a capture that fails falls back to eager decoding with a RuntimeWarning: here that is an error
no_capture_fallback = pytest.mark.filterwarnings("error::RuntimeWarning")


def _count_replays(monkeypatch):
    """Counts the full-step graph replays of generate()."""
    from audiocodec.lm.generate import _FixedDecoder
    count = {"replays": 0}
    replay = _FixedDecoder._replay

    def counted(self):
        count["replays"] += 1
        return replay(self)
    monkeypatch.setattr(_FixedDecoder, "_replay", counted)
    return count


def _with_end_bonus(sampler, vocab_size, end_token, bonus, allowed=None):
    """A graph-safe sample_fn: ``sampler`` after masking to ``allowed`` tokens and adding ``bonus`` to the end
    token's logit (random weights would rarely end a row)."""
    extra = torch.zeros(vocab_size, device="cuda")
    extra[end_token] = bonus

    def sample_fn(logits, state):
        logits = logits.float() + extra
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        return sampler(logits, state)
    sample_fn.graph_safe = True
    sample_fn.generators = sampler.generators
    return sample_fn


def _tts_like_hooks(vocab_size, speech_offset, end_token, min_len, seed, greedy=False):
    """TTS._sampler's sample_fn (speech tokens + the end token only, EOS not before min_len, RAS top-k 25 /
    top-p 0.8), declared graph-safe; seed None draws from the default CUDA generator."""
    from audiocodec.lm import TokenSampler
    allowed = torch.zeros(vocab_size, dtype=torch.bool, device="cuda")
    allowed[speech_offset:] = True
    allowed[end_token] = True
    gen = None if seed is None else torch.Generator(device="cuda").manual_seed(seed)
    sampler = TokenSampler(top_k=25, top_p=0.8, ras=not greedy, do_sample=not greedy, eos_id=end_token,
                           min_len=min_len, generator=gen)
    return _with_end_bonus(sampler, vocab_size, end_token, 2.0, allowed)


@cuda
@no_capture_fallback
@pytest.mark.parametrize("steps_per_graph", [1, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", ["greedy", "seeded", "default_generator"])
def test_full_step_graph_matches_eager_tts_like(monkeypatch, mode, dtype, steps_per_graph):
    """A TTS-like configuration (one stream, vocab 4.2k, RAS sampling, per-row min_len, EOS ends rows at
    different steps): the whole step replayed from CUDA graphs = the eager loop (static shapes, no row
    dropped) = the model-only graph with eager hooks: tokens, lengths and the generator's state after."""
    from audiocodec.lm import TransformerLM, generate, left_padding_mask
    count = _count_replays(monkeypatch)
    vocab, offset, end = 4200, 104, 2
    torch.manual_seed(0)
    model = TransformerLM(vocab_size=vocab, dim=64, num_layers=2, num_heads=4, init_std=0.05).cuda().to(dtype).eval()
    lengths = torch.tensor([9, 4, 7], device="cuda")
    prompts = torch.randint(0, vocab, (3, 1, 9), device="cuda").masked_fill(~left_padding_mask(lengths, 9)[:, None], 0)
    min_len = torch.tensor([30, 60, 10], device="cuda")
    runs = []
    for how in ("eager", "model_graph", "full_graph"):
        if mode == "default_generator":
            torch.manual_seed(1)
        fn = _tts_like_hooks(vocab, offset, end, min_len, None if mode == "default_generator" else 3,
                             greedy=mode == "greedy")
        hook = fn if how != "model_graph" else (lambda logits, state: fn(logits, state))   # not graph-safe
        before = count["replays"]
        out = generate(model, prompts, 150, prompt_lengths=lengths, sample_fn=hook, eos_id=end, pad_id=0,
                       static_shapes=True, drop_finished=False, cuda_graph=how != "eager",
                       steps_per_graph=steps_per_graph)
        assert (count["replays"] > before) == (how == "full_graph")
        rng = fn.generators[0].get_state() if fn.generators else torch.cuda.get_rng_state()
        runs.append((out, rng))
    (ref, ref_rng), *others = runs
    if mode != "greedy":
        assert ref.tokens.unique().numel() > 20
    for out, rng in others:
        assert torch.equal(out.tokens, ref.tokens) and torch.equal(out.lengths, ref.lengths)
        assert torch.equal(out.finished, ref.finished) and torch.equal(rng, ref_rng)


@cuda
@no_capture_fallback
@pytest.mark.parametrize("steps_per_graph", [1, 8])
def test_compiled_full_step_graph_matches_eager(monkeypatch, steps_per_graph):
    """generate(compile_step=True) with CUDA graphs (the step's halves through torch.compile, then captured):
    the eager loop's tokens, lengths and random draws (TTS-like hooks, fp32, rows ending apart)."""
    import torch._dynamo
    from audiocodec.lm import TransformerLM, generate, left_padding_mask
    count = _count_replays(monkeypatch)
    vocab, offset, end = 4200, 104, 2
    torch.manual_seed(0)
    model = TransformerLM(vocab_size=vocab, dim=64, num_layers=2, num_heads=4, init_std=0.05).cuda().eval()
    lengths = torch.tensor([9, 4, 7], device="cuda")
    prompts = torch.randint(0, vocab, (3, 1, 9), device="cuda").masked_fill(~left_padding_mask(lengths, 9)[:, None], 0)
    min_len = torch.tensor([30, 60, 10], device="cuda")
    runs = []
    for compiled in (False, True):
        torch._dynamo.reset()
        fn = _tts_like_hooks(vocab, offset, end, min_len, 3)
        out = generate(model, prompts, 150, prompt_lengths=lengths, sample_fn=fn, eos_id=end, pad_id=0,
                       static_shapes=True, drop_finished=False, cuda_graph=compiled, compile_step=compiled,
                       steps_per_graph=steps_per_graph)
        runs.append((out, fn.generators[0].get_state()))
    torch._dynamo.reset()
    (ref, ref_rng), (out, rng) = runs
    assert count["replays"] > 0 and ref.tokens.unique().numel() > 20
    assert torch.equal(out.tokens, ref.tokens) and torch.equal(out.lengths, ref.lengths)
    assert torch.equal(out.finished, ref.finished) and torch.equal(rng, ref_rng)


@cuda
@no_capture_fallback
@pytest.mark.parametrize("greedy", [True, False])
def test_full_step_graph_matches_eager_delay_pattern(monkeypatch, greedy):
    """Three streams with cross-attention memory, guidance and the TTS delay pattern's forced cells
    (delay_pattern_force): graphed = eager."""
    from audiocodec.lm import TokenSampler, TransformerLM, delay_pattern_force, generate, left_padding_mask
    count = _count_replays(monkeypatch)
    k, vocab, pad, eos, end = 3, 300, 0, 2, 0
    torch.manual_seed(0)
    model = TransformerLM(vocab_size=vocab, dim=64, num_layers=2, num_heads=4, num_kv_heads=2, num_codebooks=k,
                          cross_attention=True, memory_dim=32, init_std=0.1).cuda().eval()
    lengths = torch.tensor([6, 2, 4, 6, 2, 4], device="cuda")
    prompts = torch.randint(5, vocab, (6, k, 6), device="cuda").masked_fill(~left_padding_mask(lengths, 6)[:, None], 0)
    memory = torch.randn(6, 7, 32, device="cuda")
    memory_mask = torch.ones(6, 7, dtype=torch.bool, device="cuda")
    memory_mask[3:] = False
    lead = torch.randint(5, vocab, (3, k, k), device="cuda")
    runs = []
    for how in ("eager", "full_graph"):
        base = TokenSampler(do_sample=not greedy, temperature=1.5, top_k=50, eos_id=end, min_len=8,
                            generator=torch.Generator(device="cuda").manual_seed(7))
        sampler = _with_end_bonus(base, vocab, end, 2.5)

        def force_fn(tokens, state):
            return delay_pattern_force(tokens, state.step, state.generated, end, pad, eos,
                                       lead.index_select(0, state.rows))
        force_fn.graph_safe = True
        out = generate(model, prompts, 78, prompt_lengths=lengths, sample_fn=sampler, force_fn=force_fn, eos_id=eos,
                       pad_id=pad, memory=memory, memory_mask=memory_mask, cfg_scale=2.0, static_shapes=True,
                       drop_finished=False, cuda_graph=how == "full_graph", steps_per_graph=4)
        runs.append((out, sampler.generators[0].get_state()))
    (a, ra), (b, rb) = runs
    assert count["replays"] > 0
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.lengths, b.lengths) and torch.equal(ra, rb)
    assert torch.equal(a.tokens[:, 1:, 0], lead[:, 1:, 0])
    assert greedy or a.finished.any()


@cuda
@no_capture_fallback
@pytest.mark.parametrize("mode", ["mixed", "interleaving_A_V", "parallel_V_A"])
def test_song_generation_with_cuda_graphs_matches_eager(monkeypatch, mode):
    """SongGenerator on CUDA replays the whole step (cross-attention memory, guidance, the mode's forced cells,
    top-k sampling) from CUDA graphs: the same songs as eager decoding, over several windows."""
    import functools
    import audiocodec.song.generate as song_generate
    from audiocodec.lm import generate_stream
    from audiocodec.song import SongGenerator, SongOptions
    from test_song import DESCRIPTIONS, LYRICS, make_model
    count = _count_replays(monkeypatch)
    model = make_model(mode, window_frames=24).cuda().eval()
    for opts in (SongOptions(duration=60 / 75, greedy=True, cfg_scale=2.0, stop_at_eos=False, context_frames=8),
                 SongOptions(duration=60 / 75, cfg_scale=3.0, top_k=10, seed=5, context_frames=8),
                 SongOptions(duration=40 / 75, cfg_scale=None, temperature=2.0, top_k=None, seed=1)):
        for lyrics, descriptions in ((LYRICS, DESCRIPTIONS), (LYRICS[:1], DESCRIPTIONS[:1])):
            # eager reference: static shapes, ended rows kept (dropping one changes the later random draws)
            monkeypatch.setattr(song_generate, "generate_stream",
                                functools.partial(generate_stream, static_shapes=True, drop_finished=False))
            eager = SongGenerator(model, cuda_graphs=False).generate_tokens(lyrics, descriptions, options=opts)
            monkeypatch.setattr(song_generate, "generate_stream", generate_stream)
            before = count["replays"]
            graphed = SongGenerator(model).generate_tokens(lyrics, descriptions, options=opts)
            assert count["replays"] > before
            for a, b in zip(eager, graphed):
                assert all(torch.equal(a[t], b[t]) for t in a), (mode, opts, len(lyrics))


@cuda
@no_capture_fallback
@pytest.mark.parametrize("steps_per_graph", [1, 2, 8])
def test_full_step_graph_unrolled_with_an_eager_tail(monkeypatch, steps_per_graph):
    """No EOS: every step runs; 45 steps = units of ``steps_per_graph`` replayed + the rest eagerly. Greedy
    and seeded top-k / top-p sampling with a repetition penalty over a window: graphed = eager, generator
    state included."""
    from audiocodec.lm import TokenSampler, TransformerLM, generate
    count = _count_replays(monkeypatch)
    torch.manual_seed(0)
    model = TransformerLM(vocab_size=500, dim=64, num_layers=2, num_heads=4, num_codebooks=2,
                          init_std=0.1).cuda().eval()
    prompts = torch.randint(0, 500, (2, 2, 5), device="cuda")
    for opts in (dict(do_sample=False, repetition_penalty=2.0),
                 dict(temperature=1.2, top_k=40, top_p=0.9, repetition_penalty=1.3, repetition_window=6)):
        runs = []
        for graphed in (False, True):
            sampler = TokenSampler(generator=torch.Generator(device="cuda").manual_seed(2), **opts)
            out = generate(model, prompts, 45, sample_fn=sampler, static_shapes=True, drop_finished=False,
                           cuda_graph=graphed, steps_per_graph=steps_per_graph)
            runs.append((out.tokens, sampler.generator.get_state()))
        assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert count["replays"] == 2 * (45 // steps_per_graph)


@cuda
@pytest.mark.parametrize("sampled", [False, True])
def test_full_step_capture_failure_falls_back_with_a_warning(sampled):
    """A hook declared graph-safe that synchronises cannot be captured: generate warns and decodes eagerly,
    with the same tokens; a sampling hook's generator (and the default one) draw eagerly afterwards as if no
    capture had been tried."""
    from audiocodec.lm import TransformerLM, generate

    def make_hook(capturable):
        gen = torch.Generator("cuda").manual_seed(5)

        def hook(logits, state):
            if not capturable and bool(logits.isnan().any()):       # a host synchronisation: not capturable
                raise AssertionError
            if not sampled:
                return logits.argmax(-1)
            probs = logits.float().softmax(-1)
            torch.rand(1, device="cuda")                             # the default generator too
            return torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=gen).view(probs.shape[:-1])
        hook.graph_safe, hook.generators = True, [gen]
        return hook
    torch.manual_seed(0)
    model = TransformerLM(vocab_size=40, dim=32, num_layers=2, num_heads=4, init_std=0.2).cuda().eval()
    prompts = torch.randint(0, 40, (2, 1, 5), device="cuda")
    torch.manual_seed(1)
    expected = generate(model, prompts, 20, sample_fn=make_hook(True))
    torch.manual_seed(1)
    with pytest.warns(RuntimeWarning, match="capturing"):
        out = generate(model, prompts, 20, sample_fn=make_hook(False), cuda_graph=True)
    assert torch.equal(out.tokens, expected.tokens)
    if sampled:
        assert out.tokens.unique().numel() > 5


@cuda
@no_capture_fallback
def test_tts_with_graph_safe_hooks_replays_the_whole_step(monkeypatch):
    """TTS (its hooks are graph-safe) replays the whole step and speaks the eager tokens (greedy, seeded RAS,
    repetition penalty + top-p)."""
    import functools
    import audiocodec.tts.synthesize as synth
    from audiocodec.lm import generate
    from audiocodec.tts import TTS, SynthesisOptions
    count = _count_replays(monkeypatch)
    codec, model = _tiny_tts()
    texts = ["a short one.", "and a somewhat longer sentence here."]
    for opts in (dict(greedy=True, min_ratio=60 / 12, max_ratio=8.0), dict(seed=3, min_ratio=2.0, max_ratio=8.0),
                 dict(seed=4, repetition_penalty=1.5, ras=False, top_p=0.9, min_ratio=1.0, max_ratio=6.0)):
        # eager reference: static shapes, ended rows kept (dropping one changes the later random draws)
        monkeypatch.setattr(synth, "generate", functools.partial(generate, static_shapes=True, drop_finished=False))
        a = TTS(model, codec, cuda_graphs=False).generate_tokens(texts, options=SynthesisOptions(**opts))
        monkeypatch.setattr(synth, "generate", generate)
        before = count["replays"]
        b = TTS(model, codec, cuda_graphs=True).generate_tokens(texts, options=SynthesisOptions(**opts))
        assert count["replays"] > before
        assert all(torch.equal(x, y) for x, y in zip(a, b)), opts
