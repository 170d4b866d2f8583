"""The hand-run benchmark scripts (benchmarks/*.py) run end to end on the CPU with tiny settings and print their
tables: a broken option or import is found here, not in a lent GPU's minutes. Their figures are not checked
(speed targets live in benchmarks/RESULTS.md), only that the rows they promise are there and sane."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _call(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def _run(script: str, *args: str) -> str:
    done = _call(script, *args)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def _table_rows(out: str, first_cell: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith(f"| {first_cell}")]


def test_codec_speed_with_every_switch_and_the_code_check():
    out = _run("codec_speed.py", "--device", "cpu", "--seconds", "0.3", "--repeats", "1", "--threads", "2",
               "--models", "wavtokenizer-75", "--peers", "none", "--dtypes", "fp32", "bf16",
               "--switch", "compiled_taps=True", "--switch", "compiled_channels_last=True",
               "--switch", "cuda_split_bf16_search=True", "--switch", "cuda_matmul_attention=True")
    rows = _table_rows(out, "ours/wavtokenizer-75")
    assert [r[2] for r in rows] == ["fp32", "bf16"]
    assert all(float(r[3].replace(",", "")) > 0 and float(r[4].split()[0].replace(",", "")) > 0 for r in rows)
    share = re.search(r"codes identical fp32 \(eager, no switches\) vs bf16 \(as measured\): ([\d.]+)%", out)
    assert share and 50 < float(share.group(1)) <= 100


def test_codec_speed_rejects_an_unknown_switch():
    done = _call("codec_speed.py", "--device", "cpu", "--models", "none", "--peers", "none",
                 "--switch", "no_such_switch=True", timeout=120)
    assert done.returncode != 0 and "no such switch" in done.stderr and "compiled_taps" in done.stderr


def test_switches_take_values_of_their_type_and_switches_off_leaves_settings(monkeypatch):
    """``--switch``: on / off switches take a truth value, a setting (split_bf16_parts, an int) only an int, and
    switches_off() turns the on / off ones off without touching the settings."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from decoding_args import set_switches, switches_off
    from audiocodec.nn.vocos import VocosBackbone
    monkeypatch.setattr(VocosBackbone, "split_bf16_parts", 3)
    monkeypatch.setattr(VocosBackbone, "cuda_split_bf16_gemms", False)
    set_switches(["split_bf16_parts=2", "cuda_split_bf16_gemms=1"])
    assert VocosBackbone.split_bf16_parts == 2 and VocosBackbone.cuda_split_bf16_gemms is True
    with pytest.raises(SystemExit, match="expected an int"):
        set_switches(["split_bf16_parts=True"])
    with switches_off():
        assert VocosBackbone.cuda_split_bf16_gemms is False and VocosBackbone.split_bf16_parts == 2
    assert VocosBackbone.cuda_split_bf16_gemms is True


def test_data_speed_times_the_trainers_loader():
    out = _run("data_speed.py", "--files", "6", "--file-seconds", "2", "--rate", "16000", "--workers", "0", "1",
               "--batch", "3", "--crop", "0.5", "--batches", "2")
    rows = _table_rows(out, "0") + _table_rows(out, "1")
    assert len(rows) == 2 and all(float(r[2]) > 0 and r[4].endswith("x") for r in rows)


def test_train_speed_times_our_step():
    out = _run("train_speed.py", "--device", "cpu", "--batch", "1", "--seconds", "0.5", "--steps", "1",
               "--warmup", "1", "--only", "ours", "--dtypes", "fp32",
               "--recipe", str(ROOT / "recipes/codec/wavtokenizer_75_small.yaml"))
    rows = _table_rows(out, "ours")
    assert len(rows) == 1 and float(rows[0][2]) > 0


@pytest.mark.parametrize("script,args", [
    ("tts_speed.py", ["--tokens", "6", "--peers"]),
    ("song_speed.py", ["--model", "random", "--seconds", "0.2", "--cfg-scale", "1", "--peers"]),
])
def test_token_generation_benchmarks_run_eager(script, args):
    out = _run(script, "--device", "cpu", "--dtype", "float32", "--batch-sizes", "1", "--modes", "eager",
               "--repeats", "1", *args)
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("eager")]
    assert rows and all(float(r[-2]) > 0 for r in rows)


def test_song_speed_times_the_musicgen_peer_on_the_same_song_length():
    out = _run("song_speed.py", "--device", "cpu", "--dtype", "float32", "--batch-sizes", "1", "--modes", "eager",
               "--repeats", "1", "--model", "random", "--mode", "mixed", "--seconds", "0.2")
    ours = [line.split() for line in out.splitlines() if line.strip().startswith("eager")]
    peer = [line.split() for line in out.splitlines() if line.strip().startswith("hf-musicgen")]
    assert "MusicgenForCausalLM" in out and len(ours) == len(peer) == 1
    assert peer[0][2] == ours[0][2] == "8"          # frames per row: 0.2 s at 40 Hz, both
    assert float(peer[0][-1]) > 0


def test_the_musicgen_peer_caches_its_cross_attention_once():
    """The peer's generate gets a cache with a cross-attention half: the self-attention cache grows one position a
    step and the memory's keys are stored once (with a plain cache they pile up a memory's worth a step)."""
    transformers = pytest.importorskip("transformers")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from song_speed import musicgen_generate
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cfg = transformers.MusicgenDecoderConfig(vocab_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             ffn_dim=64, num_codebooks=2, max_position_embeddings=32, pad_token_id=16,
                                             bos_token_id=16, eos_token_id=None)
    peer = transformers.MusicgenForCausalLM(cfg).eval()
    gen = transformers.GenerationConfig(max_new_tokens=9, do_sample=True, top_k=4, pad_token_id=16, bos_token_id=16,
                                        decoder_start_token_id=16, num_beams=1, num_return_sequences=1)
    with torch.no_grad():
        out, cache = musicgen_generate(peer, torch.full((2, 1), 16), gen, torch.randn(1, 11, 32))
    assert out.shape[:2] == (1, 2)
    assert cache.self_attention_cache.get_seq_length() == 9   # the start token and 8 sampled steps
    assert cache.cross_attention_cache.get_seq_length() == 11
