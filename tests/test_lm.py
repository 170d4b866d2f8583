"""Autoregressive LM core: cached decoding, left-padded batches, memorisation, samplers, errors."""
import json

import pytest
import torch

from audiocodec.errors import CodesError, ConfigError
from audiocodec.lm import (CacheOverflowError, StepState, TokenSampler, TransformerLM, classifier_free_guidance,
                           force_eos, generate, left_padding_mask, repetition_aware_sample, repetition_penalty,
                           sample, suppress_eos, top_k_filter, top_p_filter)

from helpers import tiny_lm

VOCAB = 40   # tiny_lm's default vocabulary


def random_tokens(batch, streams, length, seed=1):
    return torch.randint(0, VOCAB, (batch, streams, length), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------------------
# KV cache


MODEL_VARIANTS = {
    "plain": dict(),
    "gqa": dict(num_kv_heads=2),
    "cross_attention": dict(cross_attention=True, memory_dim=24),
    "gqa_cross_streams": dict(num_kv_heads=1, cross_attention=True, num_codebooks=3),
}


def memory_for(model, batch, frames=6, seed=2):
    if model.memory_dim is None:
        return {}
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(batch, frames, model.memory_dim, generator=g)
    mask = torch.ones(batch, frames, dtype=torch.bool)
    mask[1, 2:] = False  # a short condition
    mask[-1] = False  # no condition at all: the cross-attention update must be zero, not NaN
    return dict(memory=memory, memory_mask=mask)


@pytest.mark.parametrize("static_shapes", [False, True])
@pytest.mark.parametrize("variant", list(MODEL_VARIANTS))
def test_cached_decoding_matches_full_forward(variant, static_shapes):
    model = tiny_lm(**MODEL_VARIANTS[variant])
    batch, length, prefill = 3, 10, 4
    tokens = random_tokens(batch, model.num_codebooks, length)
    lengths = torch.tensor([10, 4, 7])  # left-padded: row 1 is all padding in the prefill, row 2 half
    padding = left_padding_mask(lengths, length)
    cond = memory_for(model, batch)
    with torch.no_grad():
        full = model(tokens, padding_mask=padding, **cond)
        cache = model.new_cache(batch, length + 2, static_shapes=static_shapes)
        chunks = [model(tokens[:, :, :prefill], padding_mask=padding[:, :prefill], cache=cache, **cond)]
        for t in range(prefill, length):  # memory comes from the cache from now on
            chunks.append(model(tokens[:, :, t:t + 1], padding_mask=padding[:, t:t + 1], cache=cache))
    incremental = torch.cat(chunks, dim=2)
    assert torch.isfinite(full).all() and torch.isfinite(incremental).all()
    real = padding[:, None, :, None].expand_as(full)
    torch.testing.assert_close(incremental[real], full[real], atol=1e-5, rtol=1e-5)
    assert cache.length == length and cache.next_position.tolist() == lengths.tolist()


@pytest.mark.parametrize("variant", list(MODEL_VARIANTS))
def test_left_padded_rows_equal_unpadded_rows(variant):
    """Per-row positions: a row padded on the left gives the same logits as the row alone."""
    model = tiny_lm(**MODEL_VARIANTS[variant])
    tokens = random_tokens(3, model.num_codebooks, 9)
    lengths = torch.tensor([9, 3, 6])
    cond = memory_for(model, 3)
    with torch.no_grad():
        batched = model(tokens, padding_mask=left_padding_mask(lengths, 9), **cond)
        for b, n in enumerate(lengths.tolist()):
            row_cond = {k: v[b:b + 1] for k, v in cond.items()}
            alone = model(tokens[b:b + 1, :, 9 - n:], **row_cond)
            torch.testing.assert_close(batched[b:b + 1, :, 9 - n:], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cached", [False, True])
def test_padding_inside_a_row_is_skipped_by_positions_and_attention(cached):
    """Positions count real tokens only: ``[a, b, PAD, PAD, c, d]`` reads like ``[a, b, c, d]``. (Left padding
    alone cannot show this, rotary attention is blind to a constant position shift.)"""
    model = tiny_lm()
    tokens = random_tokens(1, 1, 6)
    padding = torch.tensor([[True, True, False, False, True, True]])
    with torch.no_grad():
        compact = model(tokens[:, :, padding[0]])
        if cached:
            cache = model.new_cache(1, 6)
            holed = torch.cat([model(tokens[:, :, :3], padding_mask=padding[:, :3], cache=cache)]
                              + [model(tokens[:, :, t:t + 1], padding_mask=padding[:, t:t + 1], cache=cache)
                                 for t in range(3, 6)], dim=2)
        else:
            holed = model(tokens, padding_mask=padding)
    torch.testing.assert_close(holed[:, :, padding[0]], compact, atol=1e-5, rtol=1e-5)


def test_padded_memory_frames_are_ignored():
    model = tiny_lm(cross_attention=True)
    tokens = random_tokens(3, 1, 5)
    cond = memory_for(model, 3)  # row 1 keeps 2 frames, row 2 none
    changed = cond["memory"].clone()
    changed[1, 2:] += 5.0
    changed[2] += 5.0
    with torch.no_grad():
        before = model(tokens, **cond)
        after = model(tokens, memory=changed, memory_mask=cond["memory_mask"])
        no_cross = tiny_lm()  # same seed: same weights except the cross-attention layers
        no_cross.load_state_dict({k: v for k, v in model.state_dict().items() if "cross" not in k})
        unconditioned = no_cross(tokens[2:])
    torch.testing.assert_close(before, after)
    torch.testing.assert_close(before[2:], unconditioned, atol=1e-5, rtol=1e-5)  # no memory: zero update
    assert not torch.allclose(before[0], model(tokens, memory=changed * 0 + 1, memory_mask=cond["memory_mask"])[0])


def test_cache_select_rows_keeps_decoding_the_kept_rows():
    model = tiny_lm(num_kv_heads=2, cross_attention=True)
    tokens = random_tokens(3, 1, 7)
    cond = memory_for(model, 3)
    with torch.no_grad():
        full = model(tokens, **cond)
        cache = model.new_cache(3, 7)
        model(tokens[:, :, :5], cache=cache, **cond)
        cache.select_rows(torch.tensor([2, 0]))  # drop row 1, swap the others
        assert cache.batch_size == 2 and cache.memory[0][0].shape[0] == 2
        step = model(tokens[[2, 0], :, 5:6], cache=cache)
    torch.testing.assert_close(step, full[[2, 0], :, 5:6], atol=1e-5, rtol=1e-5)


def test_cache_reset_allows_reuse():
    model = tiny_lm()
    tokens = random_tokens(2, 1, 6)
    with torch.no_grad():
        cache = model.new_cache(2, 6)
        first = model(tokens, cache=cache)
        cache.reset()
        assert cache.length == 0 and not cache.key_valid.any()
        second = model(tokens, cache=cache)
    torch.testing.assert_close(first, second)


def test_cache_overflow_is_a_clear_error_and_changes_nothing():
    model = tiny_lm()
    cache = model.new_cache(2, 5)
    with torch.no_grad():
        model(random_tokens(2, 1, 4), cache=cache)
        with pytest.raises(CacheOverflowError, match="max_len=5"):
            model(random_tokens(2, 1, 2), cache=cache)
        assert cache.length == 4
        model(random_tokens(2, 1, 1), cache=cache)  # the last slot is still usable
        with pytest.raises(CacheOverflowError):
            model(random_tokens(2, 1, 1), cache=cache)


# --------------------------------------------------------------------------------------------------------------
# generation


def prompts_and_lengths(streams=1):
    lengths = torch.tensor([2, 6, 4])
    tokens = random_tokens(3, streams, 6, seed=5)
    return tokens.masked_fill(~left_padding_mask(lengths, 6)[:, None], 0), lengths


@pytest.mark.parametrize("variant", ["plain", "gqa_cross_streams"])
def test_batched_greedy_generation_equals_generating_each_prompt_alone(variant):
    model = tiny_lm(**MODEL_VARIANTS[variant])
    prompts, lengths = prompts_and_lengths(model.num_codebooks)
    cond = memory_for(model, 3)
    batched = generate(model, prompts, 12, prompt_lengths=lengths, **cond)
    assert batched.tokens.shape == (3, model.num_codebooks, 12)
    assert batched.tokens.unique().numel() > 5  # a real test: the model does not just repeat one token
    for b, n in enumerate(lengths.tolist()):
        alone = generate(model, prompts[b:b + 1, :, 6 - n:], 12, **{k: v[b:b + 1] for k, v in cond.items()})
        assert torch.equal(batched.tokens[b], alone.tokens[0]), f"row {b}"


@pytest.mark.parametrize("variant", ["plain", "gqa_cross_streams"])
def test_static_shape_generation_equals_dynamic(variant):
    """The static cache (device-side slot, attention over every slot: what CUDA graphs replay) decodes
    the same tokens; cuda_graph=True is ignored off CUDA; DecodeStep refuses setups it cannot capture."""
    from audiocodec.lm import DecodeStep
    model = tiny_lm(**MODEL_VARIANTS[variant])
    prompts, lengths = prompts_and_lengths(model.num_codebooks)
    cond = memory_for(model, 3)
    dynamic = generate(model, prompts, 12, prompt_lengths=lengths, **cond)
    for kwargs in (dict(static_shapes=True), dict(cuda_graph=True)):
        out = generate(model, prompts, 12, prompt_lengths=lengths, **cond, **kwargs)
        assert torch.equal(out.tokens, dynamic.tokens), kwargs
    with pytest.raises(ValueError, match="static_shapes"):
        DecodeStep(model, model.new_cache(1, 4), cuda_graph=True)
    with pytest.raises(ValueError, match="CUDA device"):
        DecodeStep(model, model.new_cache(1, 4, static_shapes=True), cuda_graph=True)


def test_rows_end_at_eos_and_pad_afterwards_without_changing_the_others():
    model = tiny_lm()
    prompts, lengths = prompts_and_lengths()
    eos, pad = VOCAB - 1, VOCAB - 2
    reference = generate(model, prompts, 10, prompt_lengths=lengths)

    def eos_for_row_1_at_step_2(tokens, state: StepState):
        return torch.where((state.rows == 1) & (state.step == 2), eos, tokens[:, 0])[:, None]

    for drop in (False, True):
        out = generate(model, prompts, 10, prompt_lengths=lengths, force_fn=eos_for_row_1_at_step_2, eos_id=eos,
                       pad_id=pad, check_every=1, drop_finished=drop)
        assert out.finished.tolist() == [False, True, False]
        assert out.lengths.tolist() == [10, 2, 10]
        assert out.tokens[1, 0].tolist() == reference.tokens[1, 0, :2].tolist() + [eos] + [pad] * 7
        assert torch.equal(out.tokens[[0, 2]], reference.tokens[[0, 2]])


@pytest.mark.parametrize("graph_step", [False, True])
def test_generate_stream_yields_the_growing_tokens_at_each_check(graph_step):
    """generate_stream: after every check_every steps, the tokens so far (a prefix of the final ones, lengths and
    ends as of then), then the whole generation, which is generate's; the eager and the graph-safe loop alike."""
    from audiocodec.lm import generate_stream
    model = tiny_lm()
    prompts, lengths = prompts_and_lengths()
    eos, pad = VOCAB - 1, VOCAB - 2

    def eos_for_row_1_at_step_5(tokens, state: StepState):
        return torch.where((state.rows == 1) & (state.step == 5), eos, tokens[:, 0])[:, None]
    eos_for_row_1_at_step_5.graph_safe = True
    kw = dict(prompt_lengths=lengths, force_fn=eos_for_row_1_at_step_5, eos_id=eos, pad_id=pad, check_every=4,
              drop_finished=False, _graph_step=graph_step)
    final = generate(model, prompts, 11, **kw)
    items = [(g.tokens.clone(), g.lengths.clone(), g.finished.clone())
             for g in generate_stream(model, prompts, 11, **kw)]
    assert [t.shape[-1] for t, _, _ in items] == [4, 8, 11]
    for tokens, lengths_so_far, ended in items:
        n = tokens.shape[-1]
        assert torch.equal(tokens, final.tokens[..., :n])
        assert lengths_so_far.tolist() == [n, min(n, 5), n] and ended.tolist() == [False, n > 5, False]
    assert torch.equal(items[-1][0], final.tokens) and torch.equal(items[-1][1], final.lengths)


def test_generation_stops_when_every_row_has_ended():
    model = tiny_lm()
    prompts, lengths = prompts_and_lengths()
    eos = VOCAB - 1
    always_eos = lambda logits, state: torch.full(logits.shape[:2], eos)  # noqa: E731
    out = generate(model, prompts, 50, prompt_lengths=lengths, sample_fn=always_eos, eos_id=eos, check_every=4)
    assert out.tokens.shape[-1] == 4  # stopped at the first check
    assert out.lengths.tolist() == [0, 0, 0] and out.finished.all()


def test_eos_is_read_from_the_chosen_stream():
    model = tiny_lm(num_codebooks=2)
    prompts, lengths = prompts_and_lengths(streams=2)
    eos = VOCAB - 1

    def eos_on_stream_1_at_step_1(tokens, state):
        tokens = tokens.clamp(max=eos - 1)
        tokens[:, 1] = eos if state.step == 1 else tokens[:, 1]
        return tokens

    kwargs = dict(prompt_lengths=lengths, force_fn=eos_on_stream_1_at_step_1, eos_id=eos, check_every=1)
    assert not generate(model, prompts, 5, eos_stream=0, **kwargs).finished.any()
    for stream in (1, None):
        out = generate(model, prompts, 5, eos_stream=stream, **kwargs)
        assert out.finished.all() and out.lengths.tolist() == [1, 1, 1] and out.tokens.shape[-1] == 2


def test_classifier_free_guidance_in_generation():
    """Scale 1 follows the conditional rows only, scale 0 the unconditional ones."""
    model = tiny_lm(cross_attention=True)
    prompts, lengths = prompts_and_lengths()
    cond = memory_for(model, 3)
    both = dict(memory=torch.cat([cond["memory"], torch.zeros_like(cond["memory"])]),
                memory_mask=torch.cat([cond["memory_mask"], torch.ones_like(cond["memory_mask"])]))
    doubled = dict(prompt=torch.cat([prompts, prompts]), prompt_lengths=torch.cat([lengths, lengths]))
    conditional = generate(model, prompts, 8, prompt_lengths=lengths, **cond)
    unconditional = generate(model, prompts, 8, prompt_lengths=lengths, memory=both["memory"][3:],
                             memory_mask=both["memory_mask"][3:])
    assert not torch.equal(conditional.tokens, unconditional.tokens)
    guided_1 = generate(model, max_new_tokens=8, cfg_scale=1.0, **doubled, **both)
    guided_0 = generate(model, max_new_tokens=8, cfg_scale=0.0, **doubled, **both)
    assert torch.equal(guided_1.tokens, conditional.tokens)
    assert torch.equal(guided_0.tokens, unconditional.tokens)


def test_seeded_sampling_is_reproducible():
    model = tiny_lm()
    prompts, lengths = prompts_and_lengths()

    def run(seed):
        sampler = TokenSampler(temperature=1.5, top_k=10, top_p=0.9, repetition_penalty=1.3,
                               generator=torch.Generator().manual_seed(seed))
        return generate(model, prompts, 12, prompt_lengths=lengths, sample_fn=sampler).tokens

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


@pytest.mark.parametrize("streams", [1, 3])
def test_tiny_model_memorises_sequences_and_greedy_decoding_reproduces_them(streams):
    torch.manual_seed(0)
    num_seqs, length = 4, 16
    data = torch.randint(4, VOCAB, (num_seqs, streams, length))
    data[:, 0, 0] = torch.arange(num_seqs)  # the first token says which sequence follows
    model = TransformerLM(VOCAB, 64, 2, 4, num_codebooks=streams, tie_embeddings=streams == 1)
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(300):
        logits = model(data[:, :, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 2), data[:, :, 1:].flatten())
        optim.zero_grad()
        loss.backward()
        optim.step()
        if loss.item() < 0.01:
            break
    assert loss.item() < 0.05
    out = generate(model, data[:, :, :1], length - 1)
    assert torch.equal(out.tokens, data[:, :, 1:])


# --------------------------------------------------------------------------------------------------------------
# sampling functions


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 3.0, 3.0, -2.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    kept = top_k_filter(logits, 3).isfinite()
    assert kept.sum(-1).tolist() == [3, 3]  # exactly k, also with ties
    assert kept[0, 1] and kept[0, 2:5].sum() == 2 and not kept[0, [0, 5]].any()


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])
    logits = probs.log()
    kept = lambda p: set(top_p_filter(logits, p).isfinite().nonzero()[:, 1].tolist())  # noqa: E731
    assert kept(0.4) == {1}
    assert kept(0.75) == {1, 3}
    assert kept(0.85) == {1, 3, 0}
    assert kept(0.99) == {0, 1, 2, 3}
    assert top_p_filter(logits, 0.85)[0, [0, 1, 3]].tolist() == logits[0, [0, 1, 3]].tolist()


def test_repetition_penalty_lowers_repeated_tokens_only():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    out = repetition_penalty(logits, torch.tensor([[0, 1, 0]]), 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]


def test_repetition_aware_sampling_resamples_repeated_tokens():
    rows, vocab = 4000, 8
    logits = torch.zeros(rows, vocab)
    logits[:, 3] = 7.0 * torch.log(torch.tensor(2.0))  # p(3) = 128 / 135 in the full distribution
    # The nucleus (top-k 1) always proposes token 3. Rows 0..1999 saw it in the last 10 tokens (once is
    # enough: 10 * 0.1 = 1), rows 2000.. only 11 tokens ago.
    history = torch.full((rows, 12), 5)
    history[:2000, -1] = 3
    history[2000:, 0] = 3
    draw = lambda seed: repetition_aware_sample(logits, history, top_k=1, top_p=0.8,  # noqa: E731
                                                generator=torch.Generator().manual_seed(seed))
    tokens = draw(0)
    assert (tokens[2000:] == 3).all()
    resampled_other = (tokens[:2000] != 3).float().mean().item()
    assert abs(resampled_other - 7 / 135) < 0.02  # drawn from the full distribution
    assert resampled_other > 0.02
    assert torch.equal(tokens, draw(0))


def test_sample_follows_the_distribution_and_never_draws_masked_tokens():
    probs = torch.tensor([0.6, 0.3, 0.1, 0.0])
    logits = probs.log().expand(20000, 4)
    tokens = sample(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(tokens, minlength=4).float() / len(tokens)
    assert freq[3] == 0
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)


def test_eos_is_masked_before_min_len_and_forced_at_max_len():
    eos = 2
    logits = torch.tensor([[0.0, 1.0, 9.0, 0.5]] * 3)
    early = suppress_eos(logits, eos, num_generated=torch.tensor([0, 4, 5]), min_len=5)
    assert early[:, eos].tolist() == [float("-inf"), float("-inf"), 9.0]
    assert torch.equal(early[:, [0, 1, 3]], logits[:, [0, 1, 3]])
    logits = torch.tensor([[0.0, 1.0, -9.0, 0.5]] * 2)
    forced = force_eos(logits, eos, num_generated=7, max_len=torch.tensor([7, 8]))
    assert forced[0].argmax() == eos and forced[0].isfinite().sum() == 1
    assert torch.equal(forced[1], logits[1])


def test_token_sampler_respects_min_len_per_row():
    eos = 2
    sampler = TokenSampler(do_sample=False, eos_id=eos, min_len=torch.tensor([0, 3, 1]))
    logits = torch.tensor([0.0, 1.0, 9.0, 0.5]).expand(2, 1, 4)
    state = StepState(step=1, generated=torch.zeros(2, 1, 1, dtype=torch.long), rows=torch.tensor([1, 2]))
    assert sampler(logits, state).tolist() == [[1], [eos]]  # original row 1 is still too short


def test_classifier_free_guidance_formula():
    cond, uncond = torch.tensor([[1.0, 4.0]]), torch.tensor([[2.0, 1.0]])
    assert classifier_free_guidance(cond, uncond, 3.0).tolist() == [[-1.0, 10.0]]
    assert torch.equal(classifier_free_guidance(cond, uncond, 1.0), cond)


# --------------------------------------------------------------------------------------------------------------
# model construction and bad inputs


def test_init_scales_residual_projections_and_ties_heads():
    model = TransformerLM(100, 64, 4, 4, tie_embeddings=True)
    assert model.head is None
    assert abs(model.layers[0].attn.qkv_proj.weight.std().item() - 0.02) < 0.002
    assert abs(model.layers[0].mlp.down_proj.weight.std().item() - 0.02 / 8 ** 0.5) < 0.001
    untied = TransformerLM(100, 64, 4, 4, num_codebooks=2)
    assert untied.head.weight.shape == (200, 64) and sum(p.numel() for p in untied.parameters()) > \
        sum(p.numel() for p in model.parameters())


def test_bad_config_raises_config_error():
    with pytest.raises(ConfigError, match="must divide dim"):
        TransformerLM(VOCAB, 30, 2, 4)
    with pytest.raises(ConfigError, match="num_kv_heads=3"):
        TransformerLM(VOCAB, 32, 2, 4, num_kv_heads=3)
    with pytest.raises(ConfigError, match="cross_attention"):
        TransformerLM(VOCAB, 32, 2, 4, memory_dim=16)


def test_wrong_inputs_raise_clear_errors():
    model = tiny_lm(num_codebooks=2)
    with pytest.raises(ValueError, match=r"tokens \[B, K=2, T\]"):
        model(random_tokens(2, 1, 5)[:, 0])
    with pytest.raises(ValueError, match=r"tokens \[B, K=2, T\]"):
        model(random_tokens(2, 3, 5))
    with pytest.raises(CodesError, match=r"\[0, 40\)"):
        model(torch.full((1, 2, 3), VOCAB))
    with pytest.raises(ValueError, match="padding_mask"):
        model(random_tokens(2, 2, 5), padding_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="no cross-attention"):
        model(random_tokens(2, 2, 5), memory=torch.zeros(2, 3, 32))
    with pytest.raises(ValueError, match="cache does not fit"):
        model(random_tokens(2, 2, 5), cache=model.new_cache(3, 10))
    cross = tiny_lm(cross_attention=True)
    with pytest.raises(ValueError, match="pass memory"):
        cross(random_tokens(2, 1, 5))
    with pytest.raises(ValueError, match=r"memory \[B=2, M, 32\]"):
        cross(random_tokens(2, 1, 5), memory=torch.zeros(2, 3, 16))
    with pytest.raises(ValueError, match="memory_mask"):
        cross(random_tokens(2, 1, 5), memory=torch.zeros(2, 3, 32), memory_mask=torch.ones(2, 4, dtype=torch.bool))


def test_generate_rejects_bad_arguments():
    model = tiny_lm()
    prompts, lengths = prompts_and_lengths()
    with pytest.raises(ValueError, match="prompt_lengths must be in"):
        generate(model, prompts, 4, prompt_lengths=torch.tensor([0, 6, 4]))
    with pytest.raises(ValueError, match=r"prompt_lengths \[B=3\]"):
        generate(model, prompts, 4, prompt_lengths=torch.tensor([2, 6]))
    with pytest.raises(ValueError, match="cfg_scale"):
        generate(model, prompts, 4, cfg_scale=3.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, prompts, 0)
    with pytest.raises(ValueError, match=r"sample_fn must return integer tokens \[B=3, K=1\]"):
        generate(model, prompts, 4, sample_fn=lambda logits, state: logits.argmax(-1)[:, 0])
    with pytest.raises(ValueError, match="min_len / max_len need eos_id"):
        TokenSampler(min_len=3)
    with pytest.raises(ValueError, match="top-p"):
        top_p_filter(torch.zeros(1, 4), 1.5)
    with pytest.raises(ValueError, match="temperature"):
        TokenSampler(temperature=0.0)


def test_rms_norm_fused_kernel_matches_the_elementwise_path():
    from audiocodec.lm.transformer import RMSNorm
    norm = RMSNorm(64)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(64) + 0.5)
    x = torch.randn(3, 5, 64)
    saved = RMSNorm.fused
    try:
        RMSNorm.fused = None                       # auto: the elementwise path on the CPU
        auto = norm(x)
        RMSNorm.fused = False
        assert torch.equal(auto, norm(x))
        RMSNorm.fused = True
        torch.testing.assert_close(norm(x), auto, rtol=1e-5, atol=1e-6)
    finally:
        RMSNorm.fused = saved


class _SavedLM(TransformerLM):
    """A TransformerLM that save_model / load_model can write and read (its constructor arguments as config)."""

    def __init__(self, **config):
        super().__init__(**config)
        self.config = config


def _legacy_layout(state: dict, sizes, num_codebooks: int = 1) -> dict:
    """``state`` in the layout before the fused projections: separate q / k / v and gate / up Linears, one output
    head per stream."""
    out = {}
    for key, value in state.items():
        if key == "head.weight":
            for k, part in enumerate(value.chunk(num_codebooks, dim=0)):
                out[f"heads.{k}.weight"] = part.clone()
            continue
        if key.endswith("attn.qkv_proj.weight"):
            base = key[: -len("qkv_proj.weight")]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.split(sizes, dim=0)):
                out[f"{base}{name}.weight"] = part.clone()
        elif key.endswith("mlp.gate_up_proj.weight"):
            base = key[: -len("gate_up_proj.weight")]
            for name, part in zip(("gate_proj", "up_proj"), value.chunk(2, dim=0)):
                out[f"{base}{name}.weight"] = part.clone()
        else:
            out[key] = value
    return out


def test_weights_of_the_separate_projection_layout_load_into_the_fused_one(tmp_path):
    """Models saved before q/k/v, gate/up and the streams' output heads were fused load (state_dict and
    load_model files) and compute the same; a file whose tensors do not fit is a CheckpointError naming them."""
    from safetensors.torch import save_file
    from audiocodec.errors import CheckpointError
    from audiocodec.weights import load_model
    config = dict(vocab_size=50, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, cross_attention=True,
                  memory_dim=16, num_codebooks=3)
    torch.manual_seed(0)
    model = _SavedLM(**config).eval()
    legacy = _legacy_layout(model.state_dict(), model.layers[0].attn.sizes, num_codebooks=3)
    assert "layers.1.attn.k_proj.weight" in legacy and "layers.1.cross_attn.k_proj.weight" in legacy
    assert "heads.2.weight" in legacy and "head.weight" not in legacy
    tokens, memory = torch.randint(0, 50, (2, 3, 7)), torch.randn(2, 5, 16)
    expected = model(tokens, memory=memory)
    fresh = _SavedLM(**config).eval()
    fresh.load_state_dict(legacy)
    assert torch.equal(fresh(tokens, memory=memory), expected)
    meta = {"format": "test-lm", "config": json.dumps(config)}
    save_file(legacy, str(tmp_path / "legacy.safetensors"), metadata=meta)
    loaded = load_model(tmp_path / "legacy.safetensors", "test-lm", _SavedLM)
    assert torch.equal(loaded(tokens, memory=memory), expected)
    legacy["layers.0.mlp.up_proj.weight"] = legacy["layers.0.mlp.up_proj.weight"][:-1]
    save_file(legacy, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="does not fit its own config"):
        load_model(tmp_path / "bad.safetensors", "test-lm", _SavedLM)


def test_cross_attention_row_without_memory_gets_an_exact_zero_update():
    """A row whose memory is all padding adds exactly zero (zeroed after the output projection); the other rows
    are plain masked attention through the output projection."""
    from audiocodec.lm.transformer import CrossAttention, cross_attention_mask
    torch.manual_seed(0)
    cross = CrossAttention(dim=32, num_heads=4, num_kv_heads=2, memory_dim=16).eval()
    x, memory = torch.randn(3, 5, 32), torch.randn(3, 7, 16)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2] = False
    keys, values = cross.memory_keys_values(memory)
    with torch.no_grad():
        out = cross(x, keys, values, cross_attention_mask(mask))
        q = cross.q_proj(x).unflatten(-1, (4, 8)).transpose(1, 2)
        attend = mask[:, None, None, :] | ~mask.any(-1)[:, None, None, None]    # an empty row attends everywhere
        ref = torch.nn.functional.scaled_dot_product_attention(q, keys.repeat_interleave(2, 1),
                                                               values.repeat_interleave(2, 1), attn_mask=attend)
        ref = cross.out_proj(ref.transpose(1, 2).flatten(2))
    assert torch.equal(out[2], torch.zeros_like(out[2]))
    torch.testing.assert_close(out[:2], ref[:2])
