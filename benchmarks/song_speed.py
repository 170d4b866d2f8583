#!/usr/bin/env python
"""Song LM speed: seconds of song generated per second of wall time (x realtime) at several batch sizes, for
the package's default song model (``--model song-mini``, embedded: ``recipes/song/mini.yaml``'s decoder 320 x 8
layers, interleaving_A_V, cross-attention to lyrics / description / voice, with the 8 x 1024-code 40 Hz music
codec), another trained model (a path), or random weights of the recipe (``--model random``). Tokens only: the
codec is not run (its speed is benchmarks/codec_speed.py's).

    python benchmarks/song_speed.py --device cuda --batch-sizes 1 --seconds 10        # eager and CUDA graphs
    python benchmarks/song_speed.py --device cuda --modes compiled --steps-per-graph 8 --profile
    python benchmarks/song_speed.py --device cuda --model random --codebooks 1 --cardinality 4096 --frame-rate 75
    python benchmarks/song_speed.py --device cpu --batch-sizes 1 --seconds 1 --modes eager --dtype float32

The random model's codec is described by ``--codebooks`` / ``--cardinality`` / ``--frame-rate`` (default: song-mini's
music codec, 8 x 1024 codes at 40 Hz, so ``--model random`` has the default model's shapes and speed; the
recipe's own default codec is the speech codec, 1 x 4096 at 75 Hz).
Every song runs the whole duration (``stop_at_eos`` off: random weights, or an early model, could end it
sooner). Guidance (``--cfg-scale``, default 3 as :class:`~audiocodec.song.SongOptions`) doubles the decoded
batch. Decoding steps per second of audio: ``frame_rate x frame_columns`` (2 for the interleaving modes).
Modes: ``eager``; ``graphs`` (rows ``graphs/S``): the whole step replayed from CUDA graphs, ``S`` steps per
captured graph (``--steps-per-graph``). Times are whole ``generate_tokens`` calls (conditioning, prefill,
capture included). The peer (``--peers hf``, default): Hugging Face ``generate`` on the MusicGen decoder (which
SongGen builds on) of the same shape, in the same process (rows ``hf-musicgen``): one track in the delay pattern,
the same work per second of audio as our ``mixed`` mode (``--mode mixed``; the interleaving modes decode two tracks,
two steps a frame). ``--stream``: also the first audio chunk's latency of streamed generation at batch 1
(``SongGenerator.generate(stream=True)``, through the model's codec). Prints a table; ``--json`` writes it.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audiocodec.config import load_yaml  # noqa: E402
from decoding_args import (add_decoding_args, apply_decoding_args, best_of, decoding_runs,  # noqa: E402
                           mode_generate, print_profile)
from audiocodec.codecs.embedded import embedded_song_path  # noqa: E402
from audiocodec.song import SongGenerator, SongModel, SongOptions, fit_text_config, load_song  # noqa: E402

song_generate = importlib.import_module("audiocodec.song.generate")   # its generate_stream: swapped per --steps-per-graph

LYRICS = "la la la, hello sun, shine on me tonight, we dance until the morning light"
DESCRIPTION = "happy pop, female vocal, bright piano"


def random_model(args) -> SongModel:
    task = load_yaml(ROOT / "recipes" / "song" / "mini.yaml")["task"]
    mode = args.mode or task["mode"]
    char = {"tokenizer": {"type": "char"}}     # the tokenizer does not change the LM's speed (no espeak-ng needed)
    lyrics = {k: v for k, v in task["lyrics"].items() if k not in ("tokenizer", "language")}
    description = {k: v for k, v in task["description"].items() if k != "tokenizer"}
    conditioners = {"lyrics": {**fit_text_config(char, [LYRICS]), **lyrics},
                    "description": {**fit_text_config(char, [DESCRIPTION]), **description},
                    "voice": task.get("voice"), "dropout": task.get("condition_dropout")}
    codec = {"model_id": "random", "fingerprint": "", "num_codebooks": args.codebooks,
             "cardinality": args.cardinality, "frame_rate": args.frame_rate, "sample_rate": 24000}
    return SongModel(mode, codec, task["model"], conditioners, task.get("loss"),
                     window_frames=int(task.get("max_frames", 750)))


_CACHE_ARG = ["cache"]   # generate's cache argument: ``cache`` in newer transformers, ``past_key_values`` before


def musicgen_generate(peer, ids: torch.Tensor, gen, memory: torch.Tensor):
    """``peer.generate`` (a ``MusicgenForCausalLM``) from ``ids [rows * K, 1]`` cross-attending to
    ``memory [rows, M, D]``, given a cache with a cross-attention half: ``(codes [rows, K, frames], cache)``.
    Given none, ``generate`` makes a plain ``DynamicCache`` (transformers 5.17 and 5.25) into which the
    cross-attention keys are appended every step: a memory's worth of keys a step, and the positions with them."""
    import transformers
    while True:
        cache = transformers.EncoderDecoderCache(transformers.DynamicCache(), transformers.DynamicCache())
        try:
            out = peer.generate(ids, generation_config=gen, encoder_hidden_states=memory, **{_CACHE_ARG[0]: cache})
            return out, cache
        except ValueError as e:
            if _CACHE_ARG[0] != "cache" or "not used by the model" not in str(e):
                raise
            _CACHE_ARG[0] = "past_key_values"


def hf_peer_rows(model: SongModel, args, device, dtype) -> list[dict]:
    """The peer: Hugging Face ``generate`` on a ``MusicgenForCausalLM`` of the song LM's shape (width, layers,
    heads, a GELU FFN of our SwiGLU's parameters, K codebooks of our vocabulary; random weights) cross-attending to a
    memory as long as our conditions' (lyrics and description characters), sampling top-k ``args.top_k``; the delay
    pattern takes ``frames + K - 1`` steps a song. Guidance doubles its rows as it doubles ours (the cond / uncond
    rows sampled apart: the same work). Timed as our rows are (whole calls, best of ``args.repeats`` after a warm-up).
    Its cache is the dynamic one (MusicGen's ``generate`` fails with a static cache in transformers 5.25:
    ``index_copy_(): index out of bounds``), given with its cross-attention half (:func:`musicgen_generate`)."""
    import transformers
    lm, k = model.lm, model.layout.num_codebooks
    ffn = lm.layers[0].mlp.down_proj.in_features * 3 // 2
    frames = int(args.seconds * model.frame_rate)
    cfg = transformers.MusicgenDecoderConfig(
        vocab_size=lm.vocab_size, hidden_size=lm.dim, num_hidden_layers=lm.num_layers, num_attention_heads=lm.num_heads,
        ffn_dim=ffn, num_codebooks=k, max_position_embeddings=frames + k + 8, pad_token_id=lm.vocab_size,
        bos_token_id=lm.vocab_size, eos_token_id=None, activation_function="gelu")
    peer = transformers.MusicgenForCausalLM(cfg).to(device=device, dtype=dtype).eval()
    print(f"peer hf-musicgen: MusicgenForCausalLM {sum(p.numel() for p in peer.parameters()) / 1e6:.1f}M parameters "
          f"(our LM {sum(p.numel() for p in lm.parameters()) / 1e6:.1f}M), {k} codebooks, transformers "
          f"{transformers.__version__}")
    gen = transformers.GenerationConfig(max_new_tokens=frames + k - 1, do_sample=True,   # no EOS: runs them all
                                        top_k=args.top_k, pad_token_id=lm.vocab_size, bos_token_id=lm.vocab_size,
                                        decoder_start_token_id=lm.vocab_size, num_beams=1, num_return_sequences=1)
    memory_len = len(LYRICS) + len(DESCRIPTION) + 2
    rows = []
    for batch in args.batch_sizes:
        n = batch * (2 if args.cfg_scale != 1 else 1)
        ids = torch.full((n * k, 1), lm.vocab_size, dtype=torch.long, device=device)
        memory = torch.randn(n, memory_len, lm.dim, device=device, dtype=dtype)
        with torch.no_grad():
            def call():
                return musicgen_generate(peer, ids, gen, memory)[0]
            call()   # warm-up
            out, best = best_of(call, device, args.repeats)
        got = out.shape[-1]   # [n, K, frames]: generate drops the start token and the delay pattern's tail
        r = {"mode": "hf-musicgen", "batch": batch, "frames_per_row": got, "seconds": best,
             "steps_per_s": gen.max_new_tokens / best, "realtime": batch * got / model.frame_rate / best}
        rows.append(r)
        print(f"{r['mode']:>11} {r['batch']:>6} {r['frames_per_row']:>11} {r['seconds']:>9.3f} "
              f"{r['steps_per_s']:>12.0f} {r['realtime']:>11.1f}", flush=True)
    return rows


def stream_codec(args, model: SongModel, device):
    """The codec that streams the audio: song-mini's (embedded) for it, else random weights of the recipe's music
    codec (``recipes/codec/music_rvq_40_small.yaml``: 8 x 1024 codes at 40 Hz, the shapes and speed of song-mini's)."""
    import audiocodec
    info = model.codec_info
    if args.model != "random":
        if not info.get("source"):
            raise SystemExit(f"--stream: the song model {args.model} records no codec source to decode with")
        return audiocodec.load_codec(info["source"], device=device).prepare_for_inference()
    task = load_yaml(ROOT / "recipes" / "codec" / "music_rvq_40_small.yaml")["task"]
    codec = audiocodec.build_codec(task["codec"], **task["codec_overrides"]).to(device).prepare_for_inference()
    if (codec.cardinality, codec.frame_rate) != (int(info["cardinality"]), float(info["frame_rate"])):
        raise SystemExit("--stream with --model random needs the music codec's shapes (--codebooks 8 "
                         "--cardinality 1024 --frame-rate 40)")
    return codec


def first_chunk(gen: SongGenerator, args, device) -> tuple[float, float]:
    """Seconds from the request to the first streamed audio chunk of one song (``generate(stream=True)``,
    batch 1, default chunks of 20 frames with 8 of look-ahead), and to its last; best of ``args.repeats``."""
    import time

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
    opts = dict(duration=args.seconds, cfg_scale=args.cfg_scale, top_k=args.top_k, seed=0, stop_at_eos=False)
    best = None
    for _ in range(args.repeats + 1):   # the first is a warm-up
        sync()
        t0 = time.perf_counter()
        first = None
        for _chunk in gen.generate(LYRICS, DESCRIPTION, stream=True, **opts):
            if first is None:
                first = time.perf_counter() - t0
        sync()
        total = time.perf_counter() - t0
        best = (first, total) if best is None else (min(best[0], first), min(best[1], total))
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="song-mini",
                   help="a song model (folder or file), an embedded one (default: song-mini, the package's default "
                        "model), or 'random': random weights of recipes/song/mini.yaml with --mode / --codebooks / "
                        "--cardinality / --frame-rate")
    p.add_argument("--mode", default=None, help="song mode of the random model (default: the recipe's)")
    p.add_argument("--codebooks", type=int, default=8)
    p.add_argument("--cardinality", type=int, default=1024)
    p.add_argument("--frame-rate", type=float, default=40.0)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    p.add_argument("--seconds", type=float, default=10.0, help="song duration generated per row")
    p.add_argument("--cfg-scale", type=float, default=3.0, help="guidance scale; 1 runs no unconditional pass")
    p.add_argument("--top-k", type=int, default=250)
    p.add_argument("--peers", nargs="*", default=["hf"], choices=["hf"],
                   help="hf: Hugging Face generate on a MusicgenForCausalLM of the same shape, in the same process "
                        "(needs transformers; --peers with no value: leave it out)")
    p.add_argument("--stream", action="store_true",
                   help="also time streamed generation at batch 1 (generate(stream=True)): the first audio chunk's "
                        "latency, through the model's codec (random weights of the music codec for --model random)")
    add_decoding_args(p, dtype_help="of the decoder LM (the conditioners run in fp32)")
    args = p.parse_args(argv)
    device, dtype = apply_decoding_args(args)
    torch.manual_seed(0)
    if args.model == "random":
        model = random_model(args).to(device)
    else:
        path = args.model if Path(args.model).exists() else embedded_song_path(args.model)
        if path is None:
            raise SystemExit(f"--model {args.model}: no such file, folder or embedded song model")
        model = load_song(path, device)
    model = model.float().eval()
    model.lm.to(dtype)    # the decoder in --dtype; the conditioners (run once per song) stay in fp32
    layout = model.layout
    steps_per_second = model.frame_rate * layout.frame_columns
    print(f"mode {layout.mode}: {layout.rows} rows, {layout.frame_columns} column(s) per frame, "
          f"{steps_per_second:.0f} decoding steps per second of audio; window {model.window_frames} frames; "
          f"LM {sum(p.numel() for p in model.lm.parameters()) / 1e6:.1f}M parameters")
    rows = []
    print(f"{'mode':>11} {'batch':>6} {'frames/row':>11} {'seconds':>9} {'steps/s/row':>12} {'x realtime':>11}")
    plain_generate = song_generate.generate_stream
    codec = stream_codec(args, model, device) if args.stream else None
    first_chunks = {}
    for mode, steps in decoding_runs(args, device.type == "cuda"):
        gen = SongGenerator(model, codec, cuda_graphs=mode != "eager", compile=mode == "compiled")
        song_generate.generate_stream = mode_generate(plain_generate, mode, steps)
        mode = mode if steps is None else f"{mode}/{steps}"
        for batch in args.batch_sizes:
            opts = dict(cfg_scale=args.cfg_scale, top_k=args.top_k, seed=0, stop_at_eos=False)
            gen.generate_tokens([LYRICS] * batch, [DESCRIPTION] * batch,
                                options=SongOptions(duration=min(args.seconds, 0.5), **opts))   # warm-up
            out, best = best_of(lambda: gen.generate_tokens([LYRICS] * batch, [DESCRIPTION] * batch,
                                                            options=SongOptions(duration=args.seconds, **opts)),
                                device, args.repeats)
            frames = sum(int(next(iter(t.values())).shape[-1]) for t in out)
            audio = frames / model.frame_rate
            r = {"mode": mode, "batch": batch, "frames_per_row": frames // batch, "seconds": best,
                 "steps_per_s": frames * layout.frame_columns / batch / best, "realtime": audio / best}
            rows.append(r)
            print(f"{r['mode']:>11} {r['batch']:>6} {r['frames_per_row']:>11} {r['seconds']:>9.3f} "
                  f"{r['steps_per_s']:>12.0f} {r['realtime']:>11.1f}", flush=True)
            if args.profile and device.type == "cuda":
                print_profile(lambda: gen.generate_tokens([LYRICS] * batch, [DESCRIPTION] * batch,
                                                          options=SongOptions(duration=args.seconds, **opts)),
                              f"{mode} batch {batch}", frames * layout.frame_columns // batch)
        if codec is not None:
            first_chunks[mode] = first_chunk(gen, args, device)
        song_generate.generate_stream = plain_generate
    for mode, (first, total) in first_chunks.items():
        print(f"{mode}: first streamed chunk (20 frames = {20 / model.frame_rate * 1000:.0f} ms of audio) "
              f"{first * 1000:.0f} ms after the request; the whole {args.seconds:g} s song streamed in {total:.2f} s")
        rows.append({"mode": mode, "batch": 1, "first_chunk_ms": first * 1000, "stream_seconds": total})
    if "hf" in args.peers:
        try:
            rows += hf_peer_rows(model, args, device, dtype)
        except ImportError as e:
            print(f"hf peer left out: {e}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": str(device), "dtype": args.dtype, "song_mode": layout.mode,
                                               "cfg_scale": args.cfg_scale, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
