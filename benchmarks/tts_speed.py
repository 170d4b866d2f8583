#!/usr/bin/env python
"""TTS LM speed: generated speech tokens per second at several batch sizes, and the first streamed
audio chunk's latency, for the default TTS config (``recipes/tts/mini.yaml``) with random weights (or a
trained model with ``--model``) and the embedded default codec.

    python benchmarks/tts_speed.py --device cuda --batch-sizes 1 64 --tokens 500    # eager and CUDA graphs
    python benchmarks/tts_speed.py --device cpu --batch-sizes 1 --tokens 100
    python benchmarks/tts_speed.py --device cuda --modes compiled --lm dim=1024 --lm num_layers=12 --lm num_heads=16

Random weights would stop at random EOS tokens: EOS is forbidden until ``--tokens`` tokens, so every row
generates exactly that many. The peer (``--peers hf``, default): Hugging Face ``generate`` with a static KV
cache on a ``LlamaForCausalLM`` of the same shape, same batch sizes and token counts, in the same process (row
``hf-static``). Prints a table; ``--json`` writes it.

Modes: ``eager``; ``graphs`` (rows ``graphs/S``): :class:`~audiocodec.tts.TTS` as it runs on CUDA, the
whole decoding step -- sampling, forced cells, bookkeeping, model -- replayed from CUDA graphs, ``S`` steps per
captured graph (``--steps-per-graph``). Times are whole ``generate_tokens`` calls: prefill and graph capture
included. The streamed first chunk is timed once per mode (streaming decodes step by step, the model step
replayed from a graph).

    python benchmarks/tts_speed.py --device cuda --batch-sizes 1 --modes graphs --steps-per-graph 1 2 8
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

import audiocodec  # noqa: E402
from audiocodec.config import load_yaml  # noqa: E402
from decoding_args import (add_decoding_args, apply_decoding_args, best_of, decoding_runs, key_values,  # noqa: E402
                           mode_generate, print_profile)
from audiocodec.text.tokenizers import build_tokenizer  # noqa: E402
from audiocodec.tts import TTS, SynthesisOptions, TTSModel, load_tts  # noqa: E402

synthesize = importlib.import_module("audiocodec.tts.synthesize")   # the module (its generate is swapped per mode)


def random_model(codec, text_config: dict, lm_config: dict) -> TTSModel:
    tok = build_tokenizer({"type": "char", "corpus": ["abcdefghijklmnopqrstuvwxyz .,?!'"]})
    vocab = {"text_size": tok.vocab_size, "speech_size": codec.cardinality, "num_codebooks": codec.num_codebooks}
    info = {"model_id": codec.name, "fingerprint": codec.fingerprint(), "sample_rate": codec.sample_rate,
            "frame_rate": codec.frame_rate, "num_codebooks": codec.num_codebooks, "cardinality": codec.cardinality}
    return TTSModel(vocab, lm_config, {"tokenizer": tok.to_dict(), "language": text_config.get("language", "en")},
                    info)


def hf_peer_rows(lm, batch_sizes: list, prompt_len: int, tokens: int, device, dtype, repeats: int) -> list[dict]:
    """The peer: Hugging Face ``generate`` with a static KV cache (its fast path; on CUDA it compiles the decoding
    step itself) on a ``LlamaForCausalLM`` of the TTS LM's shape (width, layers, heads, SwiGLU width, vocabulary,
    RoPE; random weights), sampling top-k 25 / top-p 0.8, ``tokens`` new tokens per row after a random prompt of
    ``prompt_len`` tokens, timed as our rows are (whole calls, best of ``repeats`` after a warm-up)."""
    import transformers
    ffn = lm.layers[0].mlp.down_proj.in_features
    cfg = transformers.LlamaConfig(
        vocab_size=lm.vocab_size, hidden_size=lm.dim, intermediate_size=ffn, num_hidden_layers=lm.num_layers,
        num_attention_heads=lm.num_heads, num_key_value_heads=lm.num_kv_heads,
        max_position_embeddings=prompt_len + tokens + 8, tie_word_embeddings=False, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": float(lm.rotary.theta)})
    model = transformers.LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval()
    print(f"peer hf-static: LlamaForCausalLM {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters "
          f"(our LM {sum(p.numel() for p in lm.parameters()) / 1e6:.1f}M), transformers {transformers.__version__}")
    gen = transformers.GenerationConfig(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True, top_k=25,
                                        top_p=0.8, cache_implementation="static", pad_token_id=0,
                                        eos_token_id=lm.vocab_size - 1)
    rows = []
    for batch in batch_sizes:
        ids = torch.randint(1, lm.vocab_size - 1, (batch, prompt_len), device=device)
        with torch.no_grad():
            def call():
                return model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gen)
            call()   # warm-up (compiles)
            out, best = best_of(call, device, repeats)
        n = (out.shape[1] - prompt_len) * batch
        rows.append({"mode": "hf-static", "batch": batch, "tokens_per_row": n // batch, "seconds": best,
                     "tokens_per_s": n / best})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="a trained TTS (default: random weights, recipes/tts/mini.yaml)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    p.add_argument("--tokens", type=int, default=500, help="speech tokens generated per row")
    p.add_argument("--lm", action="append", default=[], metavar="KEY=VALUE",
                   help="change the random model's LM config (repeatable), e.g. a VALL-E-sized decoder: "
                        "--lm dim=1024 --lm num_layers=12 --lm num_heads=16")
    p.add_argument("--peers", nargs="*", default=["hf"], choices=["hf"],
                   help="hf: Hugging Face generate (static cache) on a LlamaForCausalLM of the same shape, in the "
                        "same process (needs transformers; --peers with no value: leave it out)")
    add_decoding_args(p)
    args = p.parse_args(argv)
    device, dtype = apply_decoding_args(args)
    codec = audiocodec.load_codec(audiocodec.DEFAULT_CODEC, device=device)
    if args.model:
        model = load_tts(args.model, device)
    else:
        recipe = load_yaml(ROOT / "recipes" / "tts" / "mini.yaml")["task"]
        lm_config = {**recipe["model"], **key_values(args.lm, "--lm")}
        model = random_model(codec, recipe["text"], lm_config).to(device)
    model = model.to(dtype).eval()
    text = "the quick brown fox jumps over the lazy dog"
    rows, first_chunk = [], {}
    plain_generate = synthesize.generate
    for mode, steps in decoding_runs(args, device.type == "cuda"):
        tts = TTS(model, codec, cuda_graphs=mode != "eager", compile=mode == "compiled")
        synthesize.generate = mode_generate(plain_generate, mode, steps)
        mode = mode if steps is None else f"{mode}/{steps}"
        ratio = args.tokens / len(tts.frontend.encode(text))
        opts = dict(min_ratio=ratio, max_ratio=ratio, seed=0)
        for batch in args.batch_sizes:
            tts.generate_tokens([text] * batch, options=SynthesisOptions(**{**opts, "min_ratio": 1, "max_ratio": 2}))
            out, best = best_of(lambda: tts.generate_tokens([text] * batch, options=SynthesisOptions(**opts)),
                                device, args.repeats)
            n = sum(int(t.shape[-1]) for t in out)
            rows.append({"mode": mode, "batch": batch, "tokens_per_row": n // batch, "seconds": best,
                         "tokens_per_s": n / best, "realtime": n / best / codec.frame_rate})
            if args.profile and device.type == "cuda":
                print_profile(lambda: tts.generate_tokens([text] * batch, options=SynthesisOptions(**opts)),
                              f"{mode} batch {batch}", n // batch)
        synthesize.generate = plain_generate
        mode = mode.split("/")[0]
        if mode in first_chunk:
            continue   # streaming does not depend on steps_per_graph: once per mode
        list(tts.synthesize(text, stream=True, **{**opts, "max_ratio": 2 * 25 / len(text)}))
        firsts = []
        for _ in range(args.repeats):
            t: dict = {}
            chunks = tts.synthesize(text, stream=True, timings=t, **opts)
            next(chunks)
            firsts.append(t["first_chunk_s"])
            chunks.close()
        first_chunk[mode] = min(firsts) * 1000
    if "hf" in args.peers:
        try:
            peer = hf_peer_rows(model.lm, args.batch_sizes, len(tts.frontend.encode(text)) + 2, args.tokens,
                                device, dtype, args.repeats)
        except ImportError as e:
            print(f"hf peer left out: {e}")
        else:
            rows += [{**r, "realtime": r["tokens_per_s"] / codec.frame_rate} for r in peer]
    print(f"{'mode':>10} {'batch':>6} {'tokens/row':>11} {'seconds':>9} {'tokens/s':>10} {'x realtime':>11}")
    for r in rows:
        print(f"{r['mode']:>10} {r['batch']:>6} {r['tokens_per_row']:>11} {r['seconds']:>9.3f} "
              f"{r['tokens_per_s']:>10.0f} {r['realtime']:>11.1f}")
    for mode, ms in first_chunk.items():
        print(f"{mode}: first streamed chunk (25 frames = {25 / codec.frame_rate * 1000:.0f} ms of audio) "
              f"after {ms:.0f} ms")
    params = sum(p.numel() for p in model.parameters())
    if args.json:
        Path(args.json).write_text(json.dumps({"device": str(device), "dtype": args.dtype, "parameters": params,
                                               "rows": rows, "first_chunk_ms": first_chunk}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
