"""The graph-safe decoding loop (``generate(_graph_step=True)``: fixed-size history buffers, the step count a
device tensor, what ``cuda_graph=True`` captures on CUDA) gives exactly the eager loop's tokens, lengths and
random draws: greedy, seeded sampling, repetition penalties, RAS, per-row EOS limits, guidance, a delay
pattern, rows ending early, song generation. Runs on the CPU (no capture); tests/test_gpu.py replays it."""
import functools

import pytest
import torch

from audiocodec.lm import (StepState, TokenSampler, delay_pattern_force, generate, generate_stream, hook_generators,
                           is_graph_safe, last_tokens, left_padding_mask, repetition_aware_sample, repetition_penalty)

from helpers import tiny_lm

VOCAB = 40   # tiny_lm's default vocabulary


def prompts_for(model, lengths=(6, 2, 4), seed=1):
    lengths = torch.tensor(lengths)
    total = int(lengths.max())
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(0, model.vocab_size, (len(lengths), model.num_codebooks, total), generator=g)
    return prompts.masked_fill(~left_padding_mask(lengths, total)[:, None], 0), lengths


def both(model, prompts, steps, make_hooks, **kwargs):
    """(eager, graph-safe) generations with fresh hooks (and generators) for each, and the generators'
    states afterwards."""
    runs = []
    for graph_step in (False, True):
        hooks = make_hooks()
        out = generate(model, prompts, steps, _graph_step=graph_step, **hooks, **kwargs)
        gens = hook_generators(hooks.get("sample_fn"), hooks.get("force_fn"))
        runs.append((out, [g.get_state() for g in gens]))
    (a, sa), (b, sb) = runs
    assert torch.equal(a.tokens, b.tokens)
    assert torch.equal(a.lengths, b.lengths) and torch.equal(a.finished, b.finished)
    assert len(sa) == len(sb) and all(torch.equal(x, y) for x, y in zip(sa, sb))   # same number of draws
    return a


def sampler(seed=0, **kw):
    return lambda: {"sample_fn": TokenSampler(generator=torch.Generator().manual_seed(seed), **kw)}


# -- the pure functions ---------------------------------------------------------------------------------

def test_last_tokens_is_the_tail_of_the_valid_columns():
    history = torch.arange(24).view(2, 12)
    for count in range(0, 13):
        for window in (1, 3, 5):
            tokens, valid = last_tokens(history, torch.tensor(count), window)
            expected = history[:, :count][:, -window:]
            assert valid.shape == (1, window) and int(valid.sum()) == expected.shape[1]
            assert torch.equal(tokens[:, valid[0]], expected)
            same, same_valid = last_tokens(history, count, window)
            assert torch.equal(same, tokens) and torch.equal(same_valid, valid)


def test_masked_history_equals_the_sliced_history():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, VOCAB, generator=g) * 3
    history = torch.randint(0, VOCAB, (4, 15), generator=g)
    for count in (0, 1, 7, 15):
        valid = torch.arange(15) < torch.tensor(count)
        assert torch.equal(repetition_penalty(logits, history, 1.7, valid=valid),
                           repetition_penalty(logits, history[:, :count], 1.7))
        for window in (1, 4, 10):
            recent, ok = last_tokens(history, torch.tensor(count), window)
            a = repetition_aware_sample(logits, history[:, :count], window=window, tau_r=0.25,
                                        generator=torch.Generator().manual_seed(count))
            b = repetition_aware_sample(logits, recent, window=window, tau_r=0.25, valid=ok,
                                        generator=torch.Generator().manual_seed(count))
            assert torch.equal(a, b)


def test_token_sampler_fixed_state_equals_sliced_state():
    """One call of the sampler: a tensor step with the whole buffer = an int step with the sliced history
    (every option on, per-row limits, a CPU limit moved once to the logits' device)."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 2, VOCAB, generator=g) * 2
    buffer = torch.randint(0, VOCAB, (3, 2, 20), generator=g)
    rows = torch.arange(3)
    for step in (0, 3, 12, 19):
        for opts in (dict(do_sample=False, repetition_penalty=2.0),
                     dict(temperature=0.8, top_k=10, top_p=0.9, repetition_penalty=1.5, repetition_window=4),
                     dict(ras=True, ras_window=5, ras_tau=0.2, top_k=8, top_p=0.95),
                     dict(eos_id=1, min_len=torch.tensor([5, 0, 20]), max_len=torch.tensor([13, 30, 12]))):
            a = TokenSampler(generator=torch.Generator().manual_seed(step), **opts)(
                logits, StepState(step, buffer[:, :, :step], rows))
            b = TokenSampler(generator=torch.Generator().manual_seed(step), **opts)(
                logits, StepState(torch.tensor(step), buffer, rows))
            assert torch.equal(a, b), (step, opts)


def test_steps_per_graph_must_divide_check_every():
    model = tiny_lm()
    prompts, lengths = prompts_for(model)
    for bad in (0, 3, 2.0):
        with pytest.raises(ValueError, match="steps_per_graph"):
            generate(model, prompts, 4, check_every=8, steps_per_graph=bad)
    generate(model, prompts, 4, check_every=8, steps_per_graph=4)   # ignored off CUDA


def test_graph_safe_declarations():
    assert is_graph_safe(TokenSampler()) and is_graph_safe(None)
    assert not is_graph_safe(lambda logits, state: logits.argmax(-1))
    g = torch.Generator()
    assert hook_generators(TokenSampler(generator=g), None, TokenSampler(generator=g)) == [g]
    model = tiny_lm()
    prompts, lengths = prompts_for(model)
    with pytest.raises(ValueError, match="graph-safe"):
        generate(model, prompts, 4, sample_fn=lambda logits, state: logits.argmax(-1), _graph_step=True)


def test_state_of_the_graph_safe_loop():
    seen = []

    def spy(logits, state):
        seen.append((state.step.clone(), state.generated.shape, state.fixed, state.valid_columns().sum()))
        return logits.argmax(-1)
    spy.graph_safe = True
    model = tiny_lm(num_codebooks=2)
    prompts, lengths = prompts_for(model)
    generate(model, prompts, 5, prompt_lengths=lengths, sample_fn=spy, _graph_step=True)
    assert [int(s) for s, *_ in seen] == list(range(5))
    assert all(shape == (3, 2, 5) and fixed and int(n) == i for i, (_, shape, fixed, n) in enumerate(seen))


# -- whole generations: eager loop == graph-safe loop ------------------------------------------------------

@pytest.mark.parametrize("variant", [dict(), dict(num_codebooks=3, num_kv_heads=2),
                                     dict(cross_attention=True, memory_dim=24, num_codebooks=2)])
def test_greedy(variant):
    model = tiny_lm(**variant)
    prompts, lengths = prompts_for(model)
    kwargs = dict(prompt_lengths=lengths)
    if model.memory_dim:
        kwargs["memory"] = torch.randn(3, 5, model.memory_dim, generator=torch.Generator().manual_seed(4))
    out = both(model, prompts, 20, lambda: {}, **kwargs)
    assert out.tokens.unique().numel() > 5


def test_seeded_sampling_with_temperature_top_k_top_p():
    model = tiny_lm(num_codebooks=2)
    prompts, lengths = prompts_for(model)
    out = both(model, prompts, 30, sampler(temperature=1.3, top_k=12, top_p=0.9), prompt_lengths=lengths)
    plain = generate(model, prompts, 30, prompt_lengths=lengths)
    assert not torch.equal(out.tokens, plain.tokens)                    # it really sampled


@pytest.mark.parametrize("window", [None, 3])
def test_repetition_penalty(window):
    model = tiny_lm()
    prompts, lengths = prompts_for(model)
    greedy = both(model, prompts, 25, sampler(do_sample=False, repetition_penalty=3.0, repetition_window=window),
                  prompt_lengths=lengths)
    assert not torch.equal(greedy.tokens, generate(model, prompts, 25, prompt_lengths=lengths).tokens)
    both(model, prompts, 25, sampler(seed=5, repetition_penalty=1.8, repetition_window=window, top_k=20),
         prompt_lengths=lengths)


def test_repetition_aware_sampling():
    model = tiny_lm(num_codebooks=2)
    prompts, lengths = prompts_for(model)
    # a low temperature makes the nucleus draw repeat, so RAS resamples often
    out = both(model, prompts, 40, sampler(seed=2, temperature=0.3, ras=True, ras_window=6, ras_tau=0.3),
               prompt_lengths=lengths)
    assert out.tokens.unique().numel() > 5


def test_min_len_and_max_len_per_row():
    model = tiny_lm()
    prompts, lengths = prompts_for(model)
    eos = 7
    make = sampler(seed=1, temperature=2.0, eos_id=eos, min_len=torch.tensor([3, 10, 0]),
                   max_len=torch.tensor([9, 14, 20]))
    out = both(model, prompts, 30, make, prompt_lengths=lengths, eos_id=eos, check_every=4, drop_finished=False)
    assert out.finished.all() and (out.lengths >= torch.tensor([3, 10, 0])).all()
    assert (out.lengths <= torch.tensor([9, 14, 20])).all()
    last = int(out.lengths.max())                 # every row ended: stopped at the first check after the last EOS
    assert out.tokens.shape[-1] == (last // 4 + 1) * 4 < 30
    greedy = sampler(do_sample=False, eos_id=eos, min_len=5, max_len=torch.tensor([6, 8, 11]))
    for drop in (False, True):
        out = both(model, prompts, 30, greedy, prompt_lengths=lengths, eos_id=eos, check_every=3, drop_finished=drop)
        assert out.finished.all() and out.tokens.shape[-1] == (int(out.lengths.max()) // 3 + 1) * 3 < 30


def test_classifier_free_guidance():
    model = tiny_lm(cross_attention=True, memory_dim=24, num_codebooks=2)
    prompts, lengths = prompts_for(model, (6, 3))
    g = torch.Generator().manual_seed(6)
    memory = torch.randn(4, 5, 24, generator=g)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[2:] = False                                                   # the null condition
    doubled = dict(prompt_lengths=torch.cat([lengths, lengths]), memory=memory, memory_mask=mask)
    for make in (lambda: {}, sampler(seed=4, top_k=15)):
        out = both(model, torch.cat([prompts, prompts]), 20, make, cfg_scale=2.5, **doubled)
        assert out.tokens.shape == (2, 2, 20)


def test_rows_of_different_prompt_lengths_one_ending_early():
    """3 rows of prompt lengths 6, 2, 4; row 1 ends at step 5 and gets pad after it. Seeded sampling matches
    the eager loop when it keeps ended rows (``drop_finished=False``: dropping a row changes the shape of
    the later random draws); greedy matches either way."""
    model = tiny_lm(num_codebooks=2)
    prompts, lengths = prompts_for(model)
    eos, pad = 3, 0

    def end_row_1_at_step_5(tokens, state):
        forced = tokens.clone()
        hit = (state.rows == 1) & (state.step == 5)
        return torch.where(hit[:, None], torch.full_like(forced, eos), forced)
    end_row_1_at_step_5.graph_safe = True

    def hooks(sample=True):
        def make():
            h = {"force_fn": end_row_1_at_step_5}
            if sample:
                h["sample_fn"] = TokenSampler(top_k=20, generator=torch.Generator().manual_seed(9))
            return h
        return make
    kwargs = dict(prompt_lengths=lengths, eos_id=eos, pad_id=pad, check_every=4)
    out = both(model, prompts, 24, hooks(), drop_finished=False, **kwargs)
    assert out.lengths.tolist()[1] == 5 and (out.tokens[1, :, 6:] == pad).all()
    for drop in (False, True):
        both(model, prompts, 24, hooks(sample=False), drop_finished=drop, **kwargs)


def _tts_like(k):
    """A K-stream TTS layout (:mod:`audiocodec.tts.layout`): the sampler of ``TTS._sampler`` (speech tokens
    only, row 0 also its end token, EOS not before ``min_len``, RAS) and the delay pattern's forced cells
    (eager: ``tts.layout.delay_force``; graph-safe: ``lm.patterns.delay_pattern_force``)."""
    from audiocodec.tts.layout import EOS, PAD, TTSVocab, delay_force, lead_in
    vocab = TTSVocab(text_size=6, speech_size=24, num_codebooks=k)
    allowed = vocab.speech_logit_mask()[None]
    prefix = torch.randint(0, 24, (k, 4), generator=torch.Generator().manual_seed(2))
    leads = torch.stack([lead_in(vocab), lead_in(vocab, prefix), lead_in(vocab)])

    def make(graph_safe, seed=0, greedy=False):
        tokens = TokenSampler(do_sample=not greedy, ras=not greedy, top_k=10, top_p=0.9, temperature=1.5,
                              eos_id=vocab.end_token, min_len=torch.tensor([4, 10, 2]),
                              generator=torch.Generator().manual_seed(seed))

        def sample_fn(logits, state):
            return tokens(logits.float().masked_fill(~allowed, float("-inf")), state)

        def force_fn(tokens, state):
            if graph_safe:
                return delay_pattern_force(tokens, state.step, state.generated, vocab.end_token, PAD, EOS,
                                           leads.index_select(0, state.rows))
            return delay_force(vocab, tokens, state.step, state.generated, leads[state.rows])
        sample_fn.graph_safe = force_fn.graph_safe = graph_safe
        sample_fn.generators = tokens.generators
        return {"sample_fn": sample_fn, "force_fn": force_fn}
    return vocab, make, EOS, PAD


@pytest.mark.parametrize("greedy", [False, True])
def test_delay_pattern_with_three_streams(greedy):
    k = 3
    vocab, make, eos, pad = _tts_like(k)
    model = tiny_lm(vocab_size=vocab.size, num_codebooks=k, seed=3)
    prompts, lengths = prompts_for(model)
    runs = []
    for graph_step in (False, True):
        hooks = make(graph_step, seed=11, greedy=greedy)
        out = generate(model, prompts, 40, prompt_lengths=lengths, eos_id=eos, pad_id=pad, drop_finished=False,
                       _graph_step=graph_step, **hooks)
        runs.append((out, hooks["sample_fn"].generators[0].get_state()))
    (a, sa), (b, sb) = runs
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.lengths, b.lengths) and torch.equal(sa, sb)
    assert torch.equal(a.tokens[1, 1:, 0], torch.stack([vocab.speech_ids(torch.randint(  # the voice's lead-in
        0, 24, (k, 4), generator=torch.Generator().manual_seed(2)))[q, 4 - q] for q in range(1, k)]))
    if not greedy:
        assert a.finished.any()
        for b_ in torch.nonzero(a.finished).flatten().tolist():       # every ended row closes with EOS columns
            n = int(a.lengths[b_])
            assert (a.tokens[b_, :, n] == eos).all() and a.tokens[b_, 0, n - k + 1] == vocab.end_token


def test_delay_pattern_force_equals_tts_delay_force():
    """Step by step on random histories, int and tensor steps, with and without a lead-in."""
    from audiocodec.tts.layout import EOS, PAD, TTSVocab, delay_force, lead_in
    vocab = TTSVocab(text_size=3, speech_size=5, num_codebooks=4)
    g = torch.Generator().manual_seed(0)
    buffer = torch.randint(0, 4, (6, 4, 12), generator=g)          # ids 0..3: PAD (row 0's end token) is common
    tokens = torch.randint(0, vocab.size, (6, 4), generator=g)
    leads = torch.stack([lead_in(vocab, torch.randint(0, 5, (4, 3), generator=g)) for _ in range(6)])
    for step in range(12):
        for lead in (None, leads):
            expected = delay_force(vocab, tokens, step, buffer[:, :, :step], lead)
            assert torch.equal(delay_pattern_force(tokens, step, buffer[:, :, :step], vocab.end_token, PAD, EOS, lead),
                               expected)
            assert torch.equal(delay_pattern_force(tokens, torch.tensor(step), buffer, vocab.end_token, PAD, EOS,
                                                   lead), expected)


def test_song_generation_graph_safe_hooks(monkeypatch):
    """The song generator's hooks in the graph-safe loop: same songs, guided and sampled, over several
    windows (one generator shared by the windows: the number of draws must match too)."""
    import audiocodec.song.generate as song_generate
    from audiocodec.song import SongGenerator, SongOptions
    from test_song import DESCRIPTIONS, LYRICS, make_model
    for mode in ("mixed", "parallel_A_V", "interleaving_V_A"):
        model = make_model(mode, window_frames=8).eval()
        gen = SongGenerator(model)
        for opts in (SongOptions(duration=21 / 75, greedy=True, cfg_scale=2.0, context_frames=3),
                     SongOptions(duration=21 / 75, cfg_scale=3.0, top_k=10, seed=5, context_frames=3),
                     SongOptions(duration=12 / 75, cfg_scale=None, temperature=3.0, top_k=None, seed=1,
                                 window_frames=12)):
            # the eager loop keeping ended rows (dropping one changes the shapes of the later random draws)
            monkeypatch.setattr(song_generate, "generate_stream",
                                functools.partial(generate_stream, drop_finished=False))
            eager = gen.generate_tokens(LYRICS, DESCRIPTIONS, options=opts)
            monkeypatch.setattr(song_generate, "generate_stream",
                                functools.partial(generate_stream, _graph_step=True))
            fixed = gen.generate_tokens(LYRICS, DESCRIPTIONS, options=opts)
            for a, b in zip(eager, fixed):
                assert a.keys() == b.keys() and all(torch.equal(a[t], b[t]) for t in a), (mode, opts)


def test_compiled_step_equals_the_eager_loop():
    """generate(compile_step=True): the graph-safe loop's two halves through torch.compile (what the CUDA
    graphs then capture) give the eager loop's tokens and draws -- seeded sampling, guidance, cross-attention;
    compiled once for every step (the host-side slot count stays out of the compiled code)."""
    import torch._dynamo
    model = tiny_lm(cross_attention=True, memory_dim=24, num_codebooks=2)
    prompts, lengths = prompts_for(model, (6, 3))
    memory = torch.randn(4, 5, 24, generator=torch.Generator().manual_seed(6))
    kwargs = dict(prompt_lengths=torch.cat([lengths, lengths]), memory=memory, cfg_scale=2.0)
    eager_hooks, compiled_hooks = sampler(seed=3, top_k=15)(), sampler(seed=3, top_k=15)()
    eager = generate(model, torch.cat([prompts, prompts]), 24, **eager_hooks, **kwargs)
    torch._dynamo.reset()
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    compiled = generate(model, torch.cat([prompts, prompts]), 24, _graph_step=True, compile_step=True,
                        **compiled_hooks, **kwargs)
    assert torch.equal(eager.tokens, compiled.tokens) and torch.equal(eager.lengths, compiled.lengths)
    assert torch.equal(eager_hooks["sample_fn"].generator.get_state(), compiled_hooks["sample_fn"].generator.get_state())
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - frames
    assert 0 < graphs <= 12        # a few graphs (split at graph breaks), not one per step
    torch._dynamo.reset()
