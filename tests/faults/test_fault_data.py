"""Data faults: a manifest with truncated, corrupt, empty, silent, clipped, NaN, wrong-rate, wrong-channel and
missing files. Codec training (``codec_gan``), ``audiocodec eval --manifest``, ``encode`` and ``extract-tokens``
skip and count the bad files, report them, never crash, and handle the good ones as if nothing happened."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import soundfile as sf
import torch

import audiocodec
from audiocodec.cli import main as cli_main
from faults_support import FAULTS, GOOD, SR, TINY_SEANET, failing_ids, tiny_codec, write_fault_corpus

#: training-dataset skip reasons accepted for each faulty file (a truncated FLAC fails to decode: corrupt or
#: truncated depending on where the crop starts)
TRAIN_REASONS = {name: ({"corrupt", "truncated"} if name == "cut.flac" else {reason})
                 for name, (reason, _) in FAULTS.items()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_fault_corpus(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    return audiocodec.save_codec(tiny_codec(), tmp_path_factory.mktemp("codec") / "tiny.safetensors")


def _records(manifest: Path) -> list[dict]:
    from audiocodec.data import read_manifest
    return read_manifest(manifest)


# -- the training data set ------------------------------------------------------------------------------

@pytest.mark.parametrize("reject_silence", [False, True])
def test_crop_dataset_skips_each_bad_file_with_its_reason(corpus, reject_silence):
    from audiocodec.data import AudioCropDataset
    records = _records(corpus)
    ds = AudioCropDataset(records, sample_rate=SR, crop_seconds=0.3, reject_silence=reject_silence, seed=3)
    for epoch in range(3):  # new crops each epoch; a known bad file is skipped again, and counted again
        ds.set_epoch(epoch)
        got = {}
        for i, rec in enumerate(records):
            name = Path(rec["path"]).name
            item = ds[i]
            got[name] = item
            if item is not None:  # what reaches training is always a finite crop of the right shape
                assert item["audio"].shape == (1, int(0.3 * SR)) and torch.isfinite(item["audio"]).all()
        for name in GOOD:
            assert got[name] is not None
        for name, reasons in TRAIN_REASONS.items():
            skipped = reasons != {None} and not (name == "silent.wav" and not reject_silence)
            assert (got[name] is None) == skipped, (epoch, name)
        assert got["clipped.wav"]["audio"].abs().max() > 0.99   # clipping is valid audio
    counts = ds.skipped
    bad = [n for n, r in TRAIN_REASONS.items() if r != {None} and not (n == "silent.wav" and not reject_silence)]
    assert sum(counts.values()) == 3 * len(bad)
    for name in bad:
        assert any(counts[r] >= 3 for r in TRAIN_REASONS[name]), (name, counts)
    # a stereo model cannot take a 3-channel file: skipped as such (mono files are repeated, not refused)
    stereo = AudioCropDataset(records, sample_rate=SR, crop_seconds=0.3, channels=2, seed=3)
    index = {Path(r["path"]).name: i for i, r in enumerate(records)}
    assert stereo[index["wrong_channels.wav"]] is None and stereo.skipped["channels"] == 1
    assert stereo[index["good_0.wav"]]["audio"].shape == (2, int(0.3 * SR))


def _codec_gan_config(manifest: Path, workers: int) -> dict:
    tiny = {"num_codebooks": 2, "encoder": dict(TINY_SEANET, lstm=1), "decoder": dict(TINY_SEANET, lstm=1),
            "quantizer": {"dim": 16, "num_quantizers": 4, "codebook_size": 16, "kmeans_iters": 3,
                          "quantizer_dropout": 1.0}}
    return {"task": {"type": "codec_gan", "codec": "encodec-24k", "codec_overrides": copy.deepcopy(tiny),
                     "loss": {"preset": "encodec", "discriminators": [
                         {"type": "msstft", "name": "msstft", "filters": 4, "n_ffts": [256, 128], "max_filters": 16}]},
                     "data": {"train": str(manifest), "valid": str(manifest), "crop_seconds": 0.3,
                              "peak_db": [-6, -1], "reject_silence": True, "valid_clips": None},
                     "valid_metrics": [], "pretrain_mel_steps": 1, "media_clips": 0},
            "trainer": {"max_steps": 6, "batch_size": 4, "log_every": 1, "val_every": 3, "ckpt_every": 3,
                        "num_workers": workers, "threads": 1, "progress": False, "device": "cpu"},
            "optim": {"gen": {"lr": 3e-4}, "disc": {"lr": 3e-4}}}


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """The codec_gan task on the broken manifest, without and with data-loader worker processes."""
    from audiocodec.train import Trainer
    out = {}
    for workers in (0, 2):
        run = tmp_path_factory.mktemp(f"run{workers}")
        trainer = Trainer(_codec_gan_config(corpus, workers), run)
        trainer.fit()
        out[workers] = (trainer, run)
    return out


def test_codec_training_on_a_broken_manifest_skips_counts_and_never_crashes(trained):
    from audiocodec.train import list_checkpoints, load_checkpoint
    from safetensors.torch import load_file
    trainer, run = trained[0]
    history = trainer.history
    for key in ("gen/total", "gen/stft", "gen/l1"):
        values = [h[key] for h in history if key in h]
        assert len(values) == 6 and all(math.isfinite(v) for v in values), key
    assert len([h for h in history if "val/mel" in h]) == 2   # validation on the same broken manifest ran
    # every skip of the data set reached the task's count, which is logged and checkpointed
    ds_counts = trainer.train_ds.skipped
    total = trainer.task.skipped_total
    assert total == sum(ds_counts.values()) > 0
    assert set(ds_counts) <= {r for rs in TRAIN_REASONS.values() for r in rs if r}
    assert f"data/skipped_total {total:.4g}" in (run / "train.log").read_text()
    _, state, _ = load_checkpoint(list_checkpoints(run / "checkpoints")[-1])
    assert state["task"]["skipped_total"] == total
    assert (run / "codec" / "model.safetensors").is_file()
    # worker processes count the same skips, and (crops being a function of the item) train the same weights
    trainer2, run2 = trained[2]
    assert trainer2.task.skipped_total == total
    last = list_checkpoints(run / "checkpoints")[-1].name
    a = load_file(str(run / "checkpoints" / last / "model.safetensors"))
    b = load_file(str(run2 / "checkpoints" / last / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_validation_metric_stays_finite_when_a_validation_batch_is_all_bad_files(trained):
    trainer, _ = trained[0]
    vals = [h["val/mel"] for h in trainer.history if "val/mel" in h]
    assert vals and all(math.isfinite(v) for v in vals), vals


def test_codec_training_reports_the_skipped_files_by_reason_when_it_ends(trained):
    _, run = trained[0]
    text = (run / "train.log").read_text()
    tail = text[text.rindex("step 6/6"):]
    assert "skipped" in tail and "corrupt" in tail and "empty" in tail, tail[-2000:]


# -- eval, encode, extract-tokens ----------------------------------------------------------------------

def test_eval_manifest_reports_each_bad_file_and_scores_the_rest(corpus, tiny_path, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    rc = cli_main(["eval", "--manifest", str(corpus), "--model", str(tiny_path), "--device", "cpu", "--workers", "1",
                   "--metrics", "mel_distance,si_sdr", "--json", str(out), "-q"])
    assert rc == 1   # some files failed; the run went on
    err = capsys.readouterr().err
    result = json.loads(out.read_text())
    failed = {f["file"] for f in result["failures"]}
    assert failed == failing_ids()
    scored = {r["file"] for r in result["files"]}
    everything = {Path(n).stem for n in GOOD + list(FAULTS)}
    assert scored == everything - failed
    for name in failed:
        assert name in err
    assert result["summary"]["mel_distance"]["count"] >= len(GOOD)
    assert f"{len(failed)} file(s) failed" in err


def test_encode_reports_bad_files_and_encodes_the_rest(corpus, tiny_path, tmp_path, capsys):
    out = tmp_path / "codes"
    inputs = [str(corpus.parent / n) for n in sorted(GOOD + list(FAULTS))]  # missing.wav given, not on disk
    rc = cli_main(["encode", *inputs, "-o", str(out), "--model", str(tiny_path), "--device", "cpu", "-q",
                   "--batch-size", "4"])
    assert rc == 1
    err = capsys.readouterr().err
    written = {p.stem for p in out.glob("*.npz")}
    assert written == {Path(n).stem for n in GOOD + list(FAULTS)} - failing_ids()
    for name in failing_ids():
        assert f"{name}." in err.split("failures:")[1]
    codec = audiocodec.load_codec(tiny_path)
    for path in out.glob("*.npz"):  # every written file decodes to its input's duration
        codes = audiocodec.Codes.load(path)
        info = sf.info(str(corpus.parent / f"{path.stem}.wav"))
        assert codec.decode(codes).shape[-1] == round(info.frames * codec.sample_rate / info.samplerate)
    # a second run skips what is done and retries only the failures
    rc = cli_main(["encode", *inputs, "-o", str(out), "--model", str(tiny_path), "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and f"skipped {len(written)} existing" in err and f"{len(failing_ids())} failed" in err


def test_extract_tokens_skips_bad_files_and_retries_them_on_resume(corpus, tiny_path, tmp_path, capsys):
    from audiocodec.data.tokens import TokenShards
    out = tmp_path / "tok"
    args = ["extract-tokens", str(corpus), "-o", str(out), "--model", str(tiny_path), "--device", "cpu",
            "--workers", "2", "-q", "--batch-size", "3", "--shard-size", "4"]
    assert cli_main(args) == 1
    err = capsys.readouterr().err
    good = {Path(n).stem for n in GOOD + list(FAULTS)} - failing_ids()
    assert f"encoded {len(good)} clip(s)" in err and f"{len(failing_ids())} failed" in err
    for name in failing_ids():
        assert f"failed {name}:" in err
    ds = TokenShards(out)
    assert {r["id"] for r in ds.records} == good
    assert cli_main(args) == 1
    err = capsys.readouterr().err
    assert "encoded 0 clip(s)" in err and f"{len(good)} already there, {len(failing_ids())} failed" in err
