"""Codebook patterns: audiocraft's vectors reproduced exactly, round trips, SongGen's layout by hand."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from audiocodec.errors import CodesError, ConfigError
from audiocodec.lm.patterns import (
    DUAL_TRACK_MODES, PATTERN_PROVIDERS, CodebookPattern, build_pattern_provider, codebook_cross_entropy,
    combine_tracks, deinterleave_tracks, interleave_tracks, parallel_tracks, songgen_code_positions,
    songgen_delay_codes, songgen_dual_track_codes, songgen_dual_track_sequences, songgen_training_sequences,
    songgen_undelay_codes, split_parallel_tracks, split_tracks,
)

VECTORS = json.loads((Path(__file__).parent / "data" / "codebook_patterns.json").read_text())
CASES = VECTORS["cases"]
S_TOK = 9999  # a special token that never collides with codes below

PROVIDER_SETTINGS = [
    ("delay", 4, {}), ("delay", 4, {"delays": [0, 1, 2, 3]}), ("delay", 3, {"delays": [0, 0, 5]}),
    ("delay", 3, {"delays": [2, 0, 1]}), ("parallel", 3, {}), ("unroll", 3, {}),
    ("unroll", 3, {"flattening": [0, 1, 1], "delays": [0, 3, 3]}), ("unroll", 3, {"flattening": [0, 2, 2]}),
    ("coarse_first", 3, {}), ("coarse_first", 4, {"delays": [0, 1, 2]}), ("coarse_first", 1, {}),
    ("musiclm", 4, {"group_by": 2}), ("musiclm", 3, {"group_by": 1}),
]


def grid_codes(batch, n_q, frames):
    """``z[b, k, t] = 100 b + 10 k + t + 1``, the input the vectors were made with."""
    return (100 * torch.arange(batch)[:, None, None] + 10 * torch.arange(n_q)[None, :, None]
            + torch.arange(frames)[None, None, :] + 1)


def case_id(case):
    return f"{case['name']}-K{case['n_q']}-T{case['timesteps']}-{case['options']}"


# --- audiocraft's vectors ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_reproduces_audiocraft_vectors(case):
    n_q, frames, special = case["n_q"], case["timesteps"], VECTORS["special_token"]
    pattern = build_pattern_provider(case["name"], n_q, **case["options"]).pattern(frames)
    assert [[list(c) for c in step] for step in pattern.layout] == case["layout"]
    assert pattern.max_delay == case["max_delay"] and pattern.valid_steps == case["valid_steps"]
    assert pattern.num_steps == len(case["layout"])
    codes = grid_codes(2, n_q, frames)
    for key, valid_only in (("full", False), ("valid_only", True)):
        want = case[key]
        seq, idx, mask = pattern.build_sequence(codes, special, keep_only_valid_steps=valid_only)
        assert seq.tolist() == want["values"]
        assert idx.tolist() == want["indexes"]
        assert mask.int().tolist() == want["mask"]
        back, ridx, rmask = pattern.revert_sequence(seq, special, keep_only_valid_steps=valid_only)
        assert back.tolist() == want["revert_values"]
        assert ridx.tolist() == want["revert_indexes"]
        assert rmask.int().tolist() == want["revert_mask"]
    partial = case["partial_revert"]
    full_seq = torch.tensor(case["full"]["values"])
    back, ridx, rmask = pattern.revert_sequence(full_seq[..., :partial["steps"]], special)
    assert (back.tolist(), ridx.tolist(), rmask.int().tolist()) == (
        partial["values"], partial["indexes"], partial["mask"])
    n_steps = pattern.num_steps
    logits = torch.arange(2 * n_q * n_steps).float().view(1, 2, n_q, n_steps)
    out, lidx, lmask = pattern.revert_logits(logits, VECTORS["logits_fill"])
    assert out.tolist() == case["logits"]["values"]
    assert lidx.tolist() == case["logits"]["indexes"]
    assert lmask.int().tolist() == case["logits"]["mask"]
    assert torch.equal(pattern.loss_mask(), lmask)


def test_musicgen_delay_example_literally():
    pattern = build_pattern_provider("delay", n_q=4, delays=[0, 1, 2, 3]).pattern(5)
    seq, _, mask = pattern.build_sequence(grid_codes(1, 4, 5), special_token=S_TOK)
    S = S_TOK
    assert pattern.num_steps == 9 == 5 + 3 + 1
    assert seq[0].tolist() == [
        [S, 1, 2, 3, 4, 5, S, S, S],
        [S, S, 11, 12, 13, 14, 15, S, S],
        [S, S, S, 21, 22, 23, 24, 25, S],
        [S, S, S, S, 31, 32, 33, 34, 35],
    ]
    assert torch.equal(mask, seq[0] != S)
    assert pattern.first_step_with_frame(2) == 3 and pattern.first_step_with_frame(8) is None


# --- round trips for every provider ------------------------------------------------------------------

@pytest.mark.parametrize("name,n_q,options", PROVIDER_SETTINGS, ids=lambda v: str(v))
def test_build_revert_round_trip(name, n_q, options):
    g = torch.Generator().manual_seed(n_q)
    provider = build_pattern_provider(name, n_q, **options)
    for frames in (1, 2, 7):
        pattern = provider.pattern(frames)
        assert provider.pattern(frames) is pattern  # cached
        codes = torch.randint(0, 1024, (3, n_q, frames), generator=g)
        seq, _, mask = pattern.build_sequence(codes, S_TOK)
        assert seq.shape == (3, n_q, pattern.num_steps)
        assert torch.equal(seq != S_TOK, mask.expand_as(seq))
        assert int(mask.sum()) == n_q * frames  # every frame appears exactly once
        back, _, back_mask = pattern.revert_sequence(seq, S_TOK)
        assert back_mask.all() and torch.equal(back, codes)
        # keep_only_valid_steps: what survives is exact, the rest is the special token
        short, _, _ = pattern.build_sequence(codes, S_TOK, keep_only_valid_steps=True)
        assert short.shape[-1] == pattern.valid_steps
        back, _, back_mask = pattern.revert_sequence(short, S_TOK, keep_only_valid_steps=True)
        assert torch.equal(back[:, back_mask], codes[:, back_mask])
        assert (back[:, ~back_mask] == S_TOK).all()


@pytest.mark.parametrize("name,n_q,options", PROVIDER_SETTINGS, ids=lambda v: str(v))
def test_logit_at_step_s_predicts_step_s_plus_1(name, n_q, options):
    pattern = build_pattern_provider(name, n_q, **options).pattern(5)
    card = 16
    codes = torch.randint(0, card, (2, n_q, 5), generator=torch.Generator().manual_seed(1))
    seq, _, mask = pattern.build_sequence(codes, special_token=0)
    # a perfect model: its output at step s is a one-hot of the token at step s + 1
    target = torch.cat([seq[..., 1:], torch.zeros_like(seq[..., :1])], dim=-1)
    logits = F.one_hot(target, card).permute(0, 3, 1, 2).float()  # [B, card, K, S]
    out, _, out_mask = pattern.revert_logits(logits)
    assert out.shape == (2, card, n_q, 5) and out_mask.all()
    assert torch.equal(out.argmax(1), codes)
    loss, per_codebook = codebook_cross_entropy(out * 50, codes, out_mask)
    assert loss < 1e-6 and per_codebook.shape == (n_q,)


def test_revert_logits_fills_unpredicted_frames():
    pattern = build_pattern_provider("delay", 2, delays=[0, 2]).pattern(4)
    logits = torch.randn(1, 3, 2, 4)  # only the first 4 of 7 steps
    out, _, mask = pattern.revert_logits(logits, special_value=float("nan"))
    # outputs 0..3 predict steps 1..4: codebook 0 frames 0..3, codebook 1 frames 0..1
    assert mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert torch.equal(out[:, :, 0], logits[:, :, 0])
    assert torch.equal(out[:, :, 1, :2], logits[:, :, 1, 2:4])
    assert out[:, :, 1, 2:].isnan().all()


# --- generation helpers -------------------------------------------------------------------------------

def test_generation_forces_special_tokens_and_keeps_prompt():
    pattern = build_pattern_provider("delay", 3).pattern(4)
    codes = torch.randint(0, 50, (2, 3, 4), generator=torch.Generator().manual_seed(2))
    seq = pattern.prefill(2, S_TOK, prompt=codes[..., :1])
    want, _, mask = pattern.build_sequence(codes, S_TOK)
    assert ((seq == -1) == (mask & (torch.arange(pattern.num_steps) > 1 + torch.arange(3)[:, None]))).all()
    start = pattern.first_step_with_frame(1)
    assert start == 2
    for step in range(start, pattern.num_steps):
        # a model that proposes the right code everywhere, and garbage where the pattern has no frame
        proposal = torch.where(mask[:, step], want[:, :, step], torch.full_like(want[:, :, step], 777))
        pattern.fill_step(seq, step, proposal, S_TOK)
    assert torch.equal(seq, want)  # garbage replaced by the special token, prompt untouched
    back, _, back_mask = pattern.revert_sequence(seq, special_token=-1)
    assert back_mask.all() and torch.equal(back, codes)
    # a cell already known is never overwritten
    seq2 = pattern.prefill(2, S_TOK, prompt=codes)
    pattern.fill_step(seq2, 1, torch.full((2, 3), 5), S_TOK)
    assert torch.equal(seq2, want)


def test_fill_step_forces_special_where_pattern_has_no_frame():
    pattern = build_pattern_provider("delay", 3).pattern(2)
    seq = torch.full((2, 3, pattern.num_steps), -1)  # nothing known, not even the special cells
    for step in range(pattern.num_steps):
        pattern.fill_step(seq, step, torch.full((2, 3), 7), S_TOK)
    assert torch.equal(seq == 7, pattern.step_mask().expand_as(seq))
    assert torch.equal(seq == S_TOK, ~pattern.step_mask().expand_as(seq))


def test_codebook_cross_entropy_matches_per_codebook_loop():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 7, 3, 5, generator=g)
    targets = torch.randint(0, 7, (2, 3, 5), generator=g)
    mask = torch.rand(2, 3, 5, generator=g) > 0.4
    mask[:, 2] = False  # a codebook with nothing to predict contributes 0
    targets[~mask] = 100  # out of range where masked: must be ignored
    loss, per_codebook = codebook_cross_entropy(logits, targets, mask)
    for k in range(2):
        lk, tk = logits[:, :, k].permute(0, 2, 1)[mask[:, k]], targets[:, k][mask[:, k]]
        assert torch.allclose(per_codebook[k], F.cross_entropy(lk, tk))
    assert per_codebook[2] == 0 and torch.allclose(loss, per_codebook.mean())


# --- SongGen's BOS/EOS layout ---------------------------------------------------------------------------

B_, E_, ST = 90, 91, 89  # BOS, EOS, decoder start


def test_songgen_layout_by_hand():
    codes = torch.tensor([[[1, 2], [11, 12], [21, 22]]])  # [1, K=3, T=2]
    seqs = songgen_training_sequences(codes, bos_id=B_, eos_id=E_, start_id=ST)
    assert seqs.labels[0].tolist() == [
        [1, 2, E_, E_, E_],
        [B_, 11, 12, E_, E_],
        [B_, B_, 21, 22, E_],
    ]
    assert seqs.decoder_inputs[0].tolist() == [
        [ST, 1, 2, E_, E_],
        [ST, B_, 11, 12, E_],
        [ST, B_, B_, 21, 22],
    ]
    assert seqs.loss_mask[0].int().tolist() == [  # the codes and one EOS per row
        [1, 1, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 1, 1],
    ]
    assert songgen_code_positions(3, 2).int().tolist() == [
        [1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0]]
    # SongGen starts the decoder with BOS itself
    assert (songgen_training_sequences(codes, B_, E_).decoder_inputs[..., 0] == B_).all()
    assert torch.equal(songgen_undelay_codes(seqs.labels), codes)
    # a generated sequence that stops before the last EOS column
    assert torch.equal(songgen_undelay_codes(seqs.labels[..., :-1], n_frames=2), codes)


def test_songgen_dual_track_by_hand():
    acc = torch.tensor([[[1], [11]]])  # [1, K=2, T=1]
    voc = torch.tensor([[[5], [15]]])
    a_v = songgen_dual_track_sequences(acc, voc, "parallel_A_V", B_, E_)
    assert a_v.labels[0].tolist() == [
        [1, E_, E_, E_],  # accompaniment rows, one EOS column appended
        [B_, 11, E_, E_],
        [B_, 5, E_, E_],  # vocal rows, one BOS column in front: one frame behind
        [B_, B_, 15, E_],
    ]
    v_a = songgen_dual_track_sequences(acc, voc, "parallel_V_A", B_, E_)
    assert v_a.labels[0].tolist() == [[B_, 1, E_, E_], [B_, B_, 11, E_], [5, E_, E_, E_], [B_, 15, E_, E_]]
    inter = songgen_dual_track_sequences(acc, voc, "interleaving_A_V", B_, E_)
    assert inter.labels[0].tolist() == [[1, 5, E_, E_, E_, E_], [B_, B_, 11, 15, E_, E_]]
    assert inter.decoder_inputs[0].tolist() == [[B_, 1, 5, E_, E_, E_], [B_, B_, B_, 11, 15, E_]]
    assert inter.loss_mask[0].int().tolist() == [[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 0]]
    v_first = songgen_dual_track_sequences(acc, voc, "interleaving_V_A", B_, E_)
    assert v_first.labels[0].tolist() == [[5, 1, E_, E_, E_, E_], [B_, B_, 15, 11, E_, E_]]
    std = songgen_dual_track_sequences(acc, voc, "parallel_std", B_, E_)
    assert std.labels[0].tolist() == [[1, E_, E_], [B_, 11, E_], [5, E_, E_], [B_, 15, E_]]


@pytest.mark.parametrize("mode", DUAL_TRACK_MODES)
def test_dual_track_round_trip(mode):
    g = torch.Generator().manual_seed(4)
    acc, voc = torch.randint(0, 80, (2, 2, 4, 6), generator=g)
    seqs = songgen_dual_track_sequences(acc, voc, mode, B_, E_)
    assert seqs.labels.shape == seqs.decoder_inputs.shape == seqs.loss_mask.shape
    got_acc, got_voc = songgen_dual_track_codes(seqs.labels, mode)
    assert torch.equal(got_acc, acc) and torch.equal(got_voc, voc)
    # every code of both tracks is supervised once, plus the first EOS of each row
    rows = seqs.labels.shape[1]
    assert int(seqs.loss_mask.sum()) == 2 * (2 * 4 * 6) + 2 * rows
    assert (seqs.labels[seqs.loss_mask] != B_).all()
    # the raw arrangements invert exactly on any tensors
    x, y = torch.randint(0, 80, (2, 3, 4, 5), generator=g)
    assert all(torch.equal(u, w) for u, w in zip(split_tracks(combine_tracks(x, y, mode, B_, E_), mode), (x, y)))


def test_parallel_and_interleave_helpers():
    a = torch.arange(6).view(1, 2, 3)
    v = 100 + a
    assert parallel_tracks(a, v).shape == (1, 4, 3)
    shifted = parallel_tracks(a, v, lead="A-V", bos_id=B_, eos_id=E_)
    assert shifted[0, :2, -1].tolist() == [E_, E_] and shifted[0, 2:, 0].tolist() == [B_, B_]
    assert all(torch.equal(p, q) for p, q in zip(split_parallel_tracks(shifted, "A-V"), (a, v)))
    both = interleave_tracks(a, v, "V-A")
    assert both[0, 0].tolist() == [100, 0, 101, 1, 102, 2]
    assert all(torch.equal(p, q) for p, q in zip(deinterleave_tracks(both, "V-A"), (a, v)))


# --- errors -----------------------------------------------------------------------------------------

def test_clear_errors():
    pattern = build_pattern_provider("delay", 4).pattern(5)
    with pytest.raises(CodesError, match=r"\[B, K, T\]"):
        pattern.build_sequence(torch.zeros(4, 5, dtype=torch.long), 0)
    with pytest.raises(CodesError, match="codebooks"):
        pattern.build_sequence(torch.zeros(1, 3, 5, dtype=torch.long), 0)
    with pytest.raises(CodesError, match="frames"):
        pattern.build_sequence(torch.zeros(1, 4, 6, dtype=torch.long), 0)
    with pytest.raises(CodesError, match="steps"):
        pattern.revert_sequence(torch.zeros(1, 4, 10, dtype=torch.long), 0)
    with pytest.raises(CodesError, match=r"\[B, card, K, S\]"):
        pattern.revert_logits(torch.zeros(1, 4, 9))
    with pytest.raises(ConfigError, match="one entry per codebook"):
        build_pattern_provider("delay", 4, delays=[0, 1, 2])
    with pytest.raises(ConfigError, match="negative"):
        build_pattern_provider("delay", 2, delays=[0, -1])
    with pytest.raises(ConfigError, match="unknown codebook pattern 'zigzag'.*delay"):
        build_pattern_provider("zigzag", 4)
    with pytest.raises(ConfigError, match="group_by"):
        build_pattern_provider("delay", 4, group_by=2)
    with pytest.raises(ConfigError, match="does not divide"):
        build_pattern_provider("musiclm", 3, group_by=2)
    with pytest.raises(ConfigError, match="different delays"):
        build_pattern_provider("unroll", 3, flattening=[0, 1, 1], delays=[0, 1, 2])
    with pytest.raises(ConfigError, match="empty step"):
        CodebookPattern([[(0, 0)]], timesteps=1, n_q=1)
    with pytest.raises(ConfigError, match="does not come after"):
        CodebookPattern([[], [(1, 0)], [(0, 0)]], timesteps=2, n_q=1)
    with pytest.raises(ConfigError, match="appears twice"):
        CodebookPattern([[], [(0, 0), (1, 0)]], timesteps=2, n_q=1)
    with pytest.raises(CodesError, match=r"\[B, K, T\]"):
        songgen_delay_codes(torch.zeros(2, 3, dtype=torch.long), B_, E_)
    with pytest.raises(CodesError, match="frames"):
        songgen_undelay_codes(torch.zeros(1, 4, 3, dtype=torch.long))
    with pytest.raises(ConfigError, match="unknown dual-track mode"):
        combine_tracks(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), "stacked")
    with pytest.raises(ConfigError, match="bos_id and eos_id"):
        parallel_tracks(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), lead="A-V")
    with pytest.raises(CodesError, match="differ in shape"):
        interleave_tracks(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))
    with pytest.raises(CodesError, match="even number of columns"):
        deinterleave_tracks(torch.zeros(1, 2, 5))
    with pytest.raises(CodesError, match="bool"):
        codebook_cross_entropy(torch.zeros(1, 3, 2, 4), torch.zeros(1, 2, 4, dtype=torch.long), torch.ones(2, 4))


def test_registry_lists_every_provider():
    assert set(PATTERN_PROVIDERS) == {"delay", "parallel", "unroll", "coarse_first", "musiclm"}
    assert build_pattern_provider("unroll", 3).num_steps(4) == 3 * 4 + 1
    assert build_pattern_provider("parallel", 3).num_steps(4) == 4 + 1
    assert build_pattern_provider("coarse_first", 3).num_steps(4) == 1 + 4 + 4
