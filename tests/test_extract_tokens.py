"""`audiocodec extract-tokens`: sharded token files that match the codec, resume without loss, and split by rank."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import audiocodec
from audiocodec.cli import main
from audiocodec.data.extract import extract_tokens
from audiocodec.data.tokens import TokenShardError, TokenShards, list_shards, read_shard, write_shard

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """9 clips of different lengths (one corrupt file) with text and speakers, and a manifest."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(9):
        n = 2400 * (1 + i % 4)
        t = np.arange(n) / 24000
        wav = (0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.02 * rng.standard_normal(n)).astype(np.float32)
        sf.write(root / f"c{i}.wav", wav, 24000)
        lines.append({"id": f"c{i}", "path": f"c{i}.wav", "duration": n / 24000, "sample_rate": 24000, "text": f"clip {i}",
                      "speaker": f"s{i % 2}"})
    (root / "bad.wav").write_bytes(b"RIFFnot really audio" * 5)
    lines.append({"id": "bad", "path": "bad.wav", "duration": 0.5, "sample_rate": 24000})
    (root / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


@pytest.fixture(scope="module")
def codec():
    return audiocodec.load_codec(audiocodec.DEFAULT_CODEC)


def _reference_tokens(codec, corpus, item):
    wav, sr = sf.read(str(corpus / f"{item}.wav"), dtype="float32")
    return codec.encode(torch.from_numpy(wav)[None, None], sample_rate=sr).tokens[0]


def test_tokens_match_the_codec_and_keep_the_records(corpus, codec, tmp_path):
    out = tmp_path / "tok"
    stats = extract_tokens(corpus / "m.jsonl", out, codec, batch_size=1, shard_size=4, num_workers=0)
    assert stats["encoded"] == 9 and list(stats["failed"]) == ["bad"] and len(stats["shards"]) == 3
    ds = TokenShards(out)
    assert len(ds) == 9 and ds.meta["model_id"] == codec.name and ds.meta["fingerprint"] == codec.fingerprint()
    for i in range(9):
        item = ds.by_id(f"c{i}")
        assert item["text"] == f"clip {i}" and item["speaker"] == f"s{i % 2}"
        assert torch.equal(item["tokens"], _reference_tokens(codec, corpus, f"c{i}"))


def test_batched_extraction_cuts_each_item_to_its_length(corpus, codec, tmp_path):
    ds_one = TokenShards(_extract(corpus, codec, tmp_path / "one", batch_size=1))
    ds_batch = TokenShards(_extract(corpus, codec, tmp_path / "batch", batch_size=4))
    for i in range(9):
        a, b = ds_one.by_id(f"c{i}")["tokens"], ds_batch.by_id(f"c{i}")["tokens"]
        assert a.shape == b.shape
        # only the last few frames of a padded item can see the padding
        assert torch.equal(a[:, :-4], b[:, :-4]), i


def _extract(corpus, codec, out, **kw):
    extract_tokens(corpus / "m.jsonl", out, codec, num_workers=0, **kw)
    return out


def test_resume_skips_done_items_and_loses_none(corpus, codec, tmp_path):
    out = tmp_path / "tok"
    extract_tokens(corpus / "m.jsonl", out, codec, batch_size=2, shard_size=2, num_workers=0)
    shards = list_shards(out)
    # an interruption: the last shards never got written (and a stray temporary file was left)
    for p in shards[2:]:
        p.unlink()
    (out / ".shard-r000-000009.npz.tmp123").write_bytes(b"partial")
    kept = {r["id"] for p in shards[:2] for r in read_shard(p)[1]}
    stats = extract_tokens(corpus / "m.jsonl", out, codec, batch_size=2, shard_size=2, num_workers=0)
    assert stats["skipped_existing"] == len(kept) and stats["encoded"] == 9 - len(kept)
    ds = TokenShards(out)                          # would raise on a duplicated id
    assert sorted(r["id"] for r in ds.records) == sorted(f"c{i}" for i in range(9))
    # a third run has nothing left to do
    assert extract_tokens(corpus / "m.jsonl", out, codec, num_workers=0)["encoded"] == 0
    assert not list(out.glob(".shard-*"))                   # the killed run's temporary file is gone


def test_ranks_split_the_work(corpus, codec, tmp_path):
    out = tmp_path / "tok"
    for rank in range(2):
        extract_tokens(corpus / "m.jsonl", out, codec, num_workers=0, rank=rank, world_size=2)
    names = {p.name[:10] for p in list_shards(out)}
    assert names == {"shard-r000", "shard-r001"}
    assert len(TokenShards(out)) == 9


def test_other_codec_and_bad_shards_are_refused(corpus, codec, tmp_path):
    out = tmp_path / "tok"
    extract_tokens(corpus / "m.jsonl", out, codec, num_workers=0)
    other = audiocodec.build_codec("encodec-24k", quantizer={"num_quantizers": 2}, num_codebooks=2).prepare_for_inference()
    with pytest.raises(audiocodec.AudioCodecError, match="another codec"):
        extract_tokens(corpus / "m.jsonl", out, other, num_workers=0)
    write_shard(out / "shard-r009-000000.npz", [np.zeros((2, 3), dtype=np.int64)], [{"id": "x"}],
                {"model_id": "encodec-24k", "cardinality": 1024})
    with pytest.raises(TokenShardError, match="another codec"):
        TokenShards(out)
    (out / "shard-r009-000000.npz").write_bytes(b"junk")
    with pytest.raises(TokenShardError, match="cannot read"):
        TokenShards(out)
    with pytest.raises(TokenShardError, match="no token shards"):
        TokenShards(tmp_path / "empty")


def test_cli_under_torchrun_two_processes(corpus, tmp_path):
    out = tmp_path / "tok"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "audiocodec", "extract-tokens", str(corpus / "m.jsonl"), "-o", str(out), "--device", "cpu",
           "--workers", "0", "-q", "--shard-size", "3"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]            # 1: one file failed (bad.wav), the rest encoded
    assert "rank 0: encoded" in r.stderr and "rank 1: encoded" in r.stderr
    assert len(TokenShards(out)) == 9
    assert main(["extract-tokens", str(corpus / "m.jsonl"), "-o", str(out), "--device", "cpu", "-q"]) == 1
