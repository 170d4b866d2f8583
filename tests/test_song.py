"""Text to song (SongGen): the modes' layouts, tiny models memorising two songs in every mode and greedy
generation giving their tokens back, guidance, condition dropout, voice masking, window-by-window
continuation, save / load, audio through a tiny RVQ codec, the ``song_lm`` training task, bad inputs."""
from __future__ import annotations

import functools
import json

import pytest
import torch

import audiocodec
import audiocodec.train.song_task  # noqa: F401  (registers song_lm)
from audiocodec.data.tokens import write_shard
from audiocodec.errors import CheckpointError, CodesError, ConfigError
from audiocodec.song import (MODES, SongGenerator, SongLayout, SongModel, SongOptions, fit_text_config, load_song,
                             pad_sequences, save_song)
from audiocodec.train import Trainer

K, C = 2, 32
LYRICS = ["hello sun, shine on me", "goodbye moon"]
DESCRIPTIONS = ["happy pop, female vocal", "slow sad folk"]
CODEC_INFO = {"model_id": "test", "fingerprint": "", "sample_rate": 24000, "frame_rate": 75.0,
              "num_codebooks": K, "cardinality": C}
NO_DROPOUT = {"voice": 0.0, "description": 0.0, "lyrics": 0.0, "all": 0.0}


def make_model(mode, codec=CODEC_INFO, voice=True, dropout=NO_DROPOUT, window_frames=64, seed=0, **lm):
    torch.manual_seed(seed)
    lyrics = fit_text_config({"tokenizer": {"type": "char"}}, LYRICS)
    description = fit_text_config({"tokenizer": {"type": "char"}}, DESCRIPTIONS)
    conditioners = {"lyrics": {**lyrics, "num_layers": 1, "num_heads": 2},
                    "description": {**description, "num_layers": 1, "num_heads": 2},
                    "voice": {"seconds": 0.1, "num_layers": 1, "num_heads": 2} if voice else None,
                    "dropout": dropout}
    return SongModel(mode, codec, {"dim": 32, "num_layers": 2, "num_heads": 2, **lm}, conditioners,
                     window_frames=window_frames)


def make_songs(frames=(10, 14), cardinality=C, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [{t: torch.randint(0, cardinality, (K, n), generator=g) for t in ("mixture", "vocal", "accompaniment")}
            for n in frames]


def batch_of(model, songs):
    layout = model.layout
    examples = [{k: v[0] for k, v in layout.training_sequences({t: s[t][None] for t in s}).items()} for s in songs]
    return pad_sequences(examples, layout.eos_id)


def fit(model, songs, steps=150, lr=1e-2, voices=None):
    batch = batch_of(model, songs)
    cond = model.conditioner.prepare(LYRICS, DESCRIPTIONS, voices)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss, stats = model.loss(batch, cond)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model.eval(), losses, stats


@functools.cache
def trained(mode):
    songs = make_songs()
    model, losses, stats = fit(make_model(mode), songs)
    return model, songs, losses, stats


def greedy(**kw):
    return SongOptions(**{"duration": 30 / 75, "greedy": True, "cfg_scale": 1.0, **kw})


# -- layout ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_layout_cells_and_inverse(mode):
    layout = SongLayout(mode, num_codebooks=3, cardinality=50)
    song = make_songs((5,), cardinality=50)[0]
    song = {t: torch.randint(0, 50, (1, 3, 5)) for t in song}
    seqs = layout.training_sequences(song)
    labels = seqs["labels"]
    length = layout.sequence_length(5)
    assert labels.shape == (1, layout.rows, length)
    codes = layout.code_cells(5, length)
    assert torch.equal(labels[0] < 50, codes)                          # codes exactly where the layout says
    assert torch.equal(labels[0] == layout.bos_id, layout.bos_cells(length))
    assert int(seqs["loss_mask"].sum()) == int(codes.sum()) + layout.rows  # codes + one EOS per row
    back = layout.tracks_from_sequence(labels, 5)
    assert all(torch.equal(back[t], song[t]) for t in layout.tracks)
    # a generated sequence stops at the last row's first EOS: the rest is implied
    cut = labels[..., :layout.frame_columns * 5 + layout.max_delay + 1]
    assert cut[0, layout.eos_row, -1] == layout.eos_id
    assert all(torch.equal(layout.tracks_from_sequence(cut, 5)[t], song[t]) for t in layout.tracks)
    # continuation: the first g*P columns are fully known from a prompt of P frames
    known, start = layout.known_cells({t: v[..., :2] for t, v in song.items()}, 1, length)
    assert start == 2 * layout.frame_columns and bool((known[..., :start] >= 0).all())
    fixed = known >= 0
    assert torch.equal(known[fixed], labels[fixed])
    assert int(fixed.sum()) == int(layout.code_cells(2, length).sum() + layout.bos_cells(length).sum())
    if mode == "mixed_pro":
        assert torch.equal(layout.tracks_from_sequence(seqs["vocal_labels"], 5)["mixture"], song["vocal"])


def test_pad_sequences_extends_the_eos_tail():
    layout = SongLayout("parallel_A_V", K, C)
    songs = make_songs((3, 6))
    batch = batch_of(make_model("parallel_A_V"), songs)
    assert batch["labels"].shape == (2, 2 * K, layout.sequence_length(6))
    assert (batch["labels"][0, :, layout.sequence_length(3):] == layout.eos_id).all()
    assert not batch["loss_mask"][0, :, layout.sequence_length(3):].any()
    single = layout.training_sequences({t: songs[0][t][None] for t in songs[0]})
    assert int(batch["loss_mask"][0].sum()) == int(single["loss_mask"].sum())


# -- memorisation and greedy generation, every mode ------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_every_mode_memorises_two_songs_and_generates_them_back(mode):
    model, songs, losses, _ = trained(mode)
    assert losses[-1] < 0.05 * losses[0]
    gen = SongGenerator(model)
    out = gen.generate_tokens(LYRICS, DESCRIPTIONS, options=greedy())
    for song, got in zip(songs, out):
        assert set(got) == set(model.layout.tracks)
        for track in model.layout.tracks:
            assert torch.equal(got[track], song[track]), (mode, track)   # right codes, and EOS at the right frame
    # one song at a time gives the same as the batch
    alone = gen.generate_tokens(LYRICS[1:], DESCRIPTIONS[1:], options=greedy())[0]
    assert all(torch.equal(alone[t], out[1][t]) for t in model.layout.tracks)


def test_a_whole_bf16_model_generates_like_the_fp32_one():
    """Conditioners included: their positions follow the embeddings' dtype (fp32 positions added to bf16
    embeddings used to promote and break the bf16 encoder)."""
    import copy
    model, songs, _, _ = trained("mixed")
    half = copy.deepcopy(model).to(torch.bfloat16)
    out = SongGenerator(half).generate_tokens(LYRICS, DESCRIPTIONS, options=greedy())
    matches = [torch.equal(got["mixture"], song["mixture"]) for song, got in zip(songs, out)]
    assert any(matches), "a memorised song should survive bf16"


def test_mixed_pro_trains_auxiliary_vocal_heads_unused_at_inference():
    model, songs, _, stats = trained("mixed_pro")
    assert float(stats["vocal_loss"]) < 0.5                                 # the vocal stem was learned too
    before = SongGenerator(model).generate_tokens(LYRICS, DESCRIPTIONS, options=greedy())
    saved = [h.weight.detach().clone() for h in model.vocal_heads]
    try:
        for h in model.vocal_heads:
            torch.nn.init.normal_(h.weight)
        after = SongGenerator(model).generate_tokens(LYRICS, DESCRIPTIONS, options=greedy())
    finally:
        for h, w in zip(model.vocal_heads, saved):
            h.weight.data.copy_(w)
    assert all(torch.equal(a["mixture"], b["mixture"]) for a, b in zip(before, after))
    assert make_model("mixed").vocal_heads is None
    with pytest.raises(ConfigError, match="needs the codec"):     # mode "mixed" is accepted, audio needs a codec
        SongGenerator(model).generate(LYRICS[0], DESCRIPTIONS[0], mode="mixed", duration=0.1, greedy=True)


# -- guidance ---------------------------------------------------------------------------------------------

def test_cfg_scale_changes_generation():
    model, songs, _, _ = trained("mixed")
    gen = SongGenerator(model)
    # scale 0 is the unconditional model alone: both songs' conditions give the same tokens ...
    uncond = gen.generate_tokens(LYRICS, DESCRIPTIONS, options=greedy(cfg_scale=0.0, stop_at_eos=False))
    assert torch.equal(uncond[0]["mixture"], uncond[1]["mixture"])
    # ... so at least one of them differs from what scale 1 (the memorised song) gives
    assert any(not torch.equal(u["mixture"], s["mixture"]) for u, s in zip(uncond, songs))
    # any other scale runs, with sampling, reproducibly from a seed
    opts = SongOptions(duration=20 / 75, cfg_scale=3.0, temperature=1.0, top_k=10, seed=3)
    a = gen.generate_tokens(LYRICS, DESCRIPTIONS, options=opts)
    b = gen.generate_tokens(LYRICS, DESCRIPTIONS, options=opts)
    for x, y in zip(a, b):
        assert torch.equal(x["mixture"], y["mixture"])
        assert 1 <= x["mixture"].shape[-1] <= 20 and int(x["mixture"].max()) < C


def test_null_condition_masks_the_whole_memory():
    model = make_model("mixed").eval()
    cond = model.conditioner.prepare(LYRICS, DESCRIPTIONS)
    inputs = batch_of(model, make_songs())["inputs"]
    with torch.no_grad():
        c, u = model(inputs, cond), model(inputs, cond.null())
    assert not torch.allclose(c, u)                                   # the null condition is another input
    memory, mask = model.condition(cond.null())
    assert not mask.any()
    assert torch.allclose(u, model.lm(inputs, memory=torch.randn_like(memory), memory_mask=mask))  # content unused


# -- conditions --------------------------------------------------------------------------------------------

def test_condition_dropout_probabilities_and_training_only():
    model = make_model("mixed", dropout={"voice": 1.0, "description": 0.0, "lyrics": 0.5, "all": 0.0})
    cond = model.conditioner.prepare(LYRICS * 500, DESCRIPTIONS * 500)
    dropped = model.conditioner.drop(cond, torch.Generator().manual_seed(0))
    assert not dropped.voice_mask.any()
    assert torch.equal(dropped.description_mask, cond.description_mask)
    lyrics_kept = dropped.lyrics_mask.any(-1).float().mean()
    assert 0.45 < float(lyrics_kept) < 0.55
    everything = make_model("mixed", dropout={"all": 1.0}).conditioner.drop(cond)
    assert not (everything.lyrics_mask.any() or everything.description_mask.any() or everything.voice_mask.any())
    # the loss drops conditions in training mode only: with all=1 training sees the null condition
    model = make_model("mixed", dropout={"all": 1.0})
    songs = make_songs()
    batch, cond = batch_of(model, songs), model.conditioner.prepare(LYRICS, DESCRIPTIONS)
    model.train()
    train_loss, _ = model.loss(batch, cond)
    model.eval()
    null_loss, _ = model.loss(batch, cond.null())
    eval_loss, _ = model.loss(batch, cond)
    assert torch.allclose(train_loss, null_loss) and not torch.allclose(train_loss, eval_loss)


def test_voice_prompt_is_masked_out_when_absent():
    model = make_model("mixed").eval()
    voice = torch.randint(0, C, (K, 7))
    with_voice = model.conditioner.prepare(LYRICS, DESCRIPTIONS, [voice, None])
    assert with_voice.voice_mask[0].all() and not with_voice.voice_mask[1].any()
    other = with_voice.dropped()
    other.voice = torch.randint(0, C, other.voice.shape)                  # new tokens everywhere
    inputs = batch_of(model, make_songs())["inputs"]
    with torch.no_grad():
        a, b = model(inputs, with_voice), model(inputs, other)
        plain = model(inputs, model.conditioner.prepare(LYRICS, DESCRIPTIONS))
    assert torch.equal(a[1], b[1]) and torch.allclose(a[1], plain[1], atol=1e-6)   # the voiceless row ignores them
    assert not torch.allclose(a[0], b[0]) and not torch.allclose(a[0], plain[0])


# -- long songs -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["mixed", "parallel_A_V", "interleaving_V_A"])
def test_continuation_makes_the_requested_length(mode):
    model = make_model(mode, window_frames=8).eval()
    gen = SongGenerator(model)
    opts = dict(duration=21 / 75, greedy=True, cfg_scale=2.0, stop_at_eos=False, context_frames=3)
    long = gen.generate_tokens(LYRICS, DESCRIPTIONS, options=SongOptions(**opts))
    assert all(t[k].shape == (K, 21) for t in long for k in model.layout.tracks)
    first = gen.generate_tokens(LYRICS, DESCRIPTIONS, options=SongOptions(**{**opts, "duration": 8 / 75}))
    for a, b in zip(long, first):                  # the first window is the song as a single window makes it
        assert all(torch.equal(a[k][:, :8], b[k]) for k in model.layout.tracks)
    one_window = gen.generate_tokens(LYRICS, DESCRIPTIONS,
                                     options=SongOptions(**{**opts, "window_frames": 21}))
    assert all(t[k].shape == (K, 21) for t in one_window for k in model.layout.tracks)


def test_continuation_stops_when_the_song_ends():
    model, songs, _, _ = trained("mixed")
    opts = greedy(duration=60 / 75, window_frames=12, context_frames=6)
    out = SongGenerator(model).generate_tokens(LYRICS, DESCRIPTIONS, options=opts)
    assert torch.equal(out[0]["mixture"], songs[0]["mixture"])   # 10 frames: ends inside the first window
    assert 12 <= out[1]["mixture"].shape[-1] <= 60
    assert torch.equal(out[1]["mixture"][:, :12], songs[1]["mixture"][:, :12])


# -- files ------------------------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    model, songs, _, _ = trained("parallel_V_A")
    path = save_song(model, tmp_path / "song")
    loaded = load_song(tmp_path / "song")
    assert loaded.config == model.config and loaded.mode == "parallel_V_A"
    cond = model.conditioner.prepare(LYRICS, DESCRIPTIONS, [torch.randint(0, C, (K, 5)), None])
    inputs = batch_of(model, songs)["inputs"]
    with torch.no_grad():
        assert torch.equal(model(inputs, cond), loaded(inputs, loaded.conditioner.prepare(
            LYRICS, DESCRIPTIONS, [cond.voice[0, :, :5], None])))
    json.loads(json.dumps(loaded.config))
    path.write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError):
        load_song(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_song(tmp_path / "nothing")


# -- audio ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return audiocodec.build_codec("encodec-24k", quantizer={"num_quantizers": 2}, num_codebooks=2).eval()


def codec_info(codec):
    return {"model_id": codec.name, "fingerprint": codec.fingerprint(), "sample_rate": codec.sample_rate,
            "frame_rate": codec.frame_rate, "num_codebooks": 2, "cardinality": codec.cardinality}


@pytest.mark.parametrize("mode", ["mixed", "interleaving_A_V"])
def test_generate_audio_through_a_tiny_codec(codec, mode, native_cpu_convs, tmp_path):
    model = make_model(mode, codec=codec_info(codec)).eval()
    gen = SongGenerator(model, codec)
    voice = torch.randn(codec.sample_rate // 2) * 0.1                # a waveform: encoded, cut to voice.seconds
    assert gen.voice_tokens(voice).shape == (2, round(0.1 * codec.frame_rate))
    song = gen.generate(LYRICS[0], DESCRIPTIONS[0], voice=voice, duration=0.1, cfg_scale=3.0, top_k=20, seed=0,
                        stop_at_eos=False)
    assert song.sample_rate == codec.sample_rate and song.frames == round(0.1 * codec.frame_rate)
    assert song.audio.shape == (song.frames * codec.hop_length,) and torch.isfinite(song.audio).all()
    if mode == "mixed":
        assert song.stems is None and set(song.tokens) == {"mixture"}
        assert torch.allclose(song.audio, codec.decode(song.tokens["mixture"][None])[0, 0])
    else:
        assert set(song.stems) == {"accompaniment", "vocal"}
        assert torch.allclose(song.audio, song.stems["accompaniment"] + song.stems["vocal"])
    save_song(model, tmp_path / "m")
    assert SongGenerator.load(tmp_path / "m", codec=codec).model.config == model.config
    other = make_model(mode, codec={**codec_info(codec), "fingerprint": "0123456789ab"})
    with pytest.raises(ConfigError, match="fingerprint"):
        SongGenerator(other, codec)
    with pytest.raises(ConfigError, match="pass codec="):
        SongGenerator.load(tmp_path / "m")
    # the command line: mixture and stems next to it
    from audiocodec.cli import main
    audiocodec.save_codec(codec, tmp_path / "codec")
    (tmp_path / "lyrics.txt").write_text(LYRICS[0])
    out = tmp_path / "song.wav"
    assert main(["sing", "--lyrics", str(tmp_path / "lyrics.txt"), "--description", DESCRIPTIONS[0], "--model",
                 str(tmp_path / "m"), "--codec", str(tmp_path / "codec"), "--duration", "0.1", "--seed", "0",
                 "--top-k", "20", "-o", str(out), "--device", "cpu"]) == 0
    assert out.is_file() and (tmp_path / "song.vocal.wav").is_file() == (mode != "mixed")
    streamed = tmp_path / "streamed.wav"     # streaming: the mixture, chunk by chunk
    assert main(["sing", "--lyrics", str(tmp_path / "lyrics.txt"), "--model", str(tmp_path / "m"), "--codec",
                 str(tmp_path / "codec"), "--duration", "0.1", "--seed", "0", "--stream", "-o", str(streamed),
                 "--device", "cpu"]) == 0
    assert audiocodec.audio.load_audio(streamed)[0].shape[-1] == song.audio.shape[-1]


@pytest.mark.parametrize("mode", ["mixed", "interleaving_A_V"])
def test_streamed_song_is_the_chunked_decode_of_the_same_tokens(codec, mode, native_cpu_convs):
    """generate(stream=True): audio chunks that start before the decoding ends (across continuation windows),
    joined equal to decode(tokens, chunk_frames=...) of generate_tokens' tokens for the same options and seed."""
    model = make_model(mode, codec=codec_info(codec)).eval()
    gen = SongGenerator(model, codec)
    options = dict(duration=0.4, cfg_scale=3.0, top_k=20, seed=0, stop_at_eos=False, window_frames=12,
                   context_frames=4, chunk_frames=5, chunk_context_frames=2)
    steps, seen = [], []
    forward = model.lm.forward
    model.lm.forward = lambda *a, **kw: steps.append(1) or forward(*a, **kw)
    try:
        chunks = []
        for chunk in gen.generate(LYRICS[0], DESCRIPTIONS[0], stream=True, **options):
            seen.append(len(steps))
            chunks.append(chunk)
    finally:
        model.lm.forward = forward
    frames = round(0.4 * codec.frame_rate)
    assert len(chunks) == -(-frames // 5) and seen[0] < len(steps) / 2   # the first chunk came early
    tokens = gen.generate_tokens([LYRICS[0]], [DESCRIPTIONS[0]], options=SongOptions(**options))[0]
    expected = gen.decode(tokens, chunk_frames=5, chunk_context_frames=2)
    assert torch.equal(torch.cat(chunks), expected.audio) and expected.audio.shape == (frames * codec.hop_length,)
    with pytest.raises(ConfigError, match="lyrics are empty"):
        gen.generate(" ", stream=True)
    with pytest.raises(ConfigError, match="needs the codec"):
        SongGenerator(model).generate(LYRICS[0], stream=True)


def test_streamed_song_that_ends_early_stops_at_its_end(native_cpu_convs):
    """A song that ends by EOS inside its first window: the stream stops at its last frame, joined the chunked
    decode of its tokens."""
    model, songs, _, _ = trained("mixed")
    torch.manual_seed(0)
    codec = audiocodec.build_codec("encodec-24k", quantizer={"num_quantizers": K, "codebook_size": C},
                                   num_codebooks=K, encoder={"n_filters": 8}, decoder={"n_filters": 8}).eval()
    gen = SongGenerator(model, codec)
    options = dict(duration=60 / 75, greedy=True, cfg_scale=1.0, window_frames=12, context_frames=6,
                   chunk_frames=4, chunk_context_frames=2)
    chunks = list(gen.generate(LYRICS[0], DESCRIPTIONS[0], stream=True, **options))
    tokens = gen.generate_tokens(LYRICS[:1], DESCRIPTIONS[:1], options=SongOptions(**options))[0]
    assert torch.equal(tokens["mixture"], songs[0]["mixture"])   # 10 frames, then EOS
    assert [len(c) for c in chunks] == [4 * codec.hop_length, 4 * codec.hop_length, 2 * codec.hop_length]
    assert torch.equal(torch.cat(chunks), gen.decode(tokens, chunk_frames=4, chunk_context_frames=2).audio)


# -- training task ----------------------------------------------------------------------------------------

def write_corpus(root, frames=(10, 14), extra=True):
    meta = {"model_id": "test", "fingerprint": "abc", "sample_rate": 24000, "frame_rate": 75.0,
            "num_codebooks": K, "cardinality": C}
    songs = make_songs(frames)
    records = [{"id": f"s{i}", "lyrics": LYRICS[i], "description": DESCRIPTIONS[i]} for i in range(len(songs))]
    mixture = [s["mixture"] for s in songs]
    if extra:   # skipped: no lyrics, too long, no stems
        records += [{"id": "nolyrics", "description": "x"}, {"id": "long", "lyrics": "la"},
                    {"id": "nostem", "lyrics": "la"}]
        mixture += [torch.zeros(K, 5, dtype=torch.long), torch.zeros(K, 99, dtype=torch.long),
                    torch.zeros(K, 5, dtype=torch.long)]
    write_shard(root / "shard-r000-000000.npz", mixture, records, meta)
    for stem in ("vocal", "accompaniment"):
        stem_tokens = [s[stem] for s in songs] + ([torch.zeros(K, 5, dtype=torch.long),
                                                   torch.zeros(K, 99, dtype=torch.long)] if extra else [])
        write_shard(root / stem / "shard-r000-000000.npz", stem_tokens, records[:len(stem_tokens)], meta)
    return songs


def test_song_lm_task_trains_and_exports(tmp_path):
    data = tmp_path / "tokens"
    songs = write_corpus(data)
    run = tmp_path / "run"
    config = {
        "name": "song",
        "task": {"type": "song_lm", "train": str(data), "valid": str(data), "mode": "parallel_A_V",
                 "lyrics": {"tokenizer": {"type": "char"}, "num_layers": 1, "num_heads": 2},
                 "description": {"tokenizer": {"type": "char"}, "num_layers": 1, "num_heads": 2},
                 "voice": {"seconds": 0.05, "num_layers": 1, "num_heads": 2},
                 "condition_dropout": {"voice": 0.5, "description": 0.0, "lyrics": 0.0, "all": 0.0},
                 "model": {"dim": 32, "num_layers": 2, "num_heads": 2}, "max_frames": 40, "max_tokens": 200},
        "trainer": {"max_steps": 60, "log_every": 30, "val_every": 60, "ckpt_every": 60, "threads": 1,
                    "progress": False, "device": "cpu", "seed": 0},
        "optim": {"main": {"lr": 1e-2, "weight_decay": 0.0}},
    }
    trainer = Trainer(config, run_dir=run)
    task = trainer.task
    assert task.train_examples.skipped == {"no lyrics": 1, "too long": 1, "length mismatch": 0, "no vocal": 0,
                                           "no accompaniment": 1}
    assert len(task.train_examples) == 2
    item = task.train_examples[(0, 3)]
    assert item["voice"].shape == (K, round(0.05 * 75))                  # a crop of the vocal stem
    trainer.fit()
    model = load_song(run / "song")
    assert model.mode == "parallel_A_V" and model.window_frames == 40
    assert model.codec_info["fingerprint"] == "abc"
    with torch.no_grad():
        loss, _ = model.loss(batch_of(model, songs), model.conditioner.prepare(LYRICS, DESCRIPTIONS))
    assert float(loss) < 1.0                                            # log(34) = 3.5 untrained
    out = SongGenerator(model).generate_tokens(LYRICS, DESCRIPTIONS, options=greedy(duration=16 / 75))
    assert all(t["vocal"].shape[0] == K for t in out)


def test_song_lm_task_needs_the_stems_its_mode_uses(tmp_path):
    data = tmp_path / "tokens"
    write_corpus(data, extra=False)
    for stem in ("accompaniment",):
        for f in (data / stem).glob("*.npz"):
            f.unlink()
    task = audiocodec.train.TASKS.build({"type": "song_lm", "train": str(data), "mode": "parallel_std",
                                         "model": {"dim": 32, "num_layers": 1, "num_heads": 2}}, "task")

    class Ctx:
        is_main = True
    with pytest.raises(ConfigError, match="accompaniment"):
        task.build(Ctx())
    mixed_pro = audiocodec.train.TASKS.build({"type": "song_lm", "train": str(data), "mode": "mixed_pro",
                                              "model": {"dim": 32, "num_layers": 1, "num_heads": 2}}, "task")
    modules = mixed_pro.build(Ctx())                                   # the vocal stem is there: fine
    batch = mixed_pro.collate([mixed_pro.train_examples[i] for i in range(2)])
    assert set(batch["sequences"]) == {"inputs", "labels", "loss_mask", "vocal_labels", "vocal_mask"}
    assert modules["song"].vocal_heads is not None
    with pytest.raises(ConfigError, match="unknown song mode"):
        audiocodec.train.TASKS.build({"type": "song_lm", "train": str(data), "mode": "duet"}, "task")


# -- bad inputs -------------------------------------------------------------------------------------------

def test_bad_inputs_give_clear_errors():
    with pytest.raises(ConfigError, match="unknown song mode"):
        make_model("karaoke")
    with pytest.raises(ConfigError, match="lm.vocab_size"):
        make_model("mixed", vocab_size=10)
    with pytest.raises(ConfigError, match="condition_dropout: unknown"):
        make_model("mixed", dropout={"melody": 0.1})
    with pytest.raises(ConfigError, match=r"condition_dropout.voice"):
        make_model("mixed", dropout={"voice": 1.5})
    with pytest.raises(ConfigError, match="codec info lacks"):
        make_model("mixed", codec={"num_codebooks": 2})
    lyrics = fit_text_config({"tokenizer": {"type": "char"}}, LYRICS)
    with pytest.raises(ConfigError, match="codebook_weights"):
        SongModel("parallel_std", CODEC_INFO, {"dim": 32, "num_layers": 1, "num_heads": 2}, {"lyrics": lyrics},
                  loss={"codebook_weights": [1.0, 1.0, 1.0]})
    with pytest.raises(ConfigError, match="not a local model folder"):
        SongModel("mixed", CODEC_INFO, {"dim": 32, "num_layers": 1, "num_heads": 2},
                  {"lyrics": lyrics, "description": {"type": "t5", "path": "/no/such/t5"}})
    with pytest.raises(ConfigError, match="unknown type"):
        SongModel("mixed", CODEC_INFO, {"dim": 32, "num_layers": 1, "num_heads": 2},
                  {"lyrics": lyrics, "description": {"type": "clap"}})
    weighted = SongModel("parallel_std", CODEC_INFO, {"dim": 32, "num_layers": 1, "num_heads": 2}, {"lyrics": lyrics},
                         loss={"codebook_weights": [1.0, 0.5]})
    assert weighted.row_weights().tolist() == [1.0, 0.5, 1.0, 0.5]
    layout = SongLayout("parallel_std", K, C)
    with pytest.raises(ConfigError, match="needs the track"):
        layout.training_sequences({"mixture": torch.zeros(1, K, 4, dtype=torch.long)})
    with pytest.raises(CodesError, match="differ in shape"):
        layout.training_sequences({"vocal": torch.zeros(1, K, 4, dtype=torch.long),
                                   "accompaniment": torch.zeros(1, K, 5, dtype=torch.long)})
    with pytest.raises(CodesError, match="codebooks"):
        SongLayout("mixed", K, C).training_sequences({"mixture": torch.zeros(1, 3, 4, dtype=torch.long)})
    with pytest.raises(CodesError, match="outside"):
        SongLayout("mixed", K, C).training_sequences({"mixture": torch.full((1, K, 4), C)})
    with pytest.raises(ConfigError, match="vocal track"):
        SongLayout("mixed_pro", K, C).training_sequences({"mixture": torch.zeros(1, K, 4, dtype=torch.long)})

    model = make_model("mixed").eval()
    gen = SongGenerator(model)
    with pytest.raises(ConfigError, match="lyrics are empty"):
        gen.generate("  ", "pop")
    with pytest.raises(ConfigError, match="trained in mode 'mixed'"):
        gen.generate("la", "pop", mode="interleaving_A_V")
    with pytest.raises(ValueError, match="duration"):
        gen.generate("la", "pop", duration=0)
    with pytest.raises(ConfigError, match="unknown song generation option"):
        gen.generate("la", "pop", temprature=0.7)
    with pytest.raises(ValueError, match="context_frames"):
        gen.generate_tokens(["la"], ["pop"], options=SongOptions(duration=0.1, window_frames=4, context_frames=4))
    with pytest.raises(ConfigError, match="one description per lyrics"):
        gen.generate_tokens(["la", "la"], ["pop"])
    with pytest.raises(ValueError, match="chunk_frames must be an int >= 1"):
        gen.generate("la", "pop", chunk_frames=0)
    with pytest.raises(ValueError, match="chunk_context_frames must be an int >= 0"):
        gen.generate("la", "pop", chunk_context_frames=-1)
    with pytest.raises(ConfigError, match="needs the codec"):
        gen.generate("la", "pop", duration=0.05)
    with pytest.raises(ConfigError, match=r"reference voice tokens must be \[K=2"):
        gen.voice_tokens(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ConfigError, match="without voice conditioning"):
        SongGenerator(make_model("mixed", voice=False)).voice_tokens(torch.zeros(K, 4, dtype=torch.long))
    with pytest.raises(ConfigError, match="reference voice tokens must be in"):
        model.conditioner.prepare(["la"], ["pop"], [torch.full((K, 4), C)])
    with pytest.raises(ValueError, match="inputs, labels, loss_mask"):
        model.loss({"inputs": torch.zeros(1, 3, 4, dtype=torch.long), "labels": torch.zeros(1, 3, 4, dtype=torch.long),
                    "loss_mask": torch.zeros(1, 3, 4, dtype=torch.bool)}, model.conditioner.prepare(["la"], ["pop"]))


def test_mini_recipe_resolves():
    from pathlib import Path

    import yaml
    from audiocodec.train import resolve_config
    config = resolve_config(yaml.safe_load((Path(__file__).parents[1] / "recipes/song/mini.yaml").read_text()))
    task = audiocodec.train.TASKS.build(config["task"], "task")
    assert task.mode in MODES and task.voice_cfg["seconds"] == 3.0
