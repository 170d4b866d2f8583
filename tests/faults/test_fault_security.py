"""Security: hostile checkpoints load without executing anything (every payload would create a marker file;
it never appears), configs cannot import code (registries only), and safetensors files with wrong metadata
are refused with a clear error."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

import audiocodec
from audiocodec.codecs.interop.safe_load import OpaqueObject, safe_torch_load
from audiocodec.config import Registry, load_yaml, parse_override
from audiocodec.errors import AudioCodecError, CheckpointError, ConfigError
from faults_support import tiny_codec

MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / f"audiocodec-pwned-{uuid.uuid4().hex}"


@pytest.fixture(autouse=True)
def no_marker():
    MARKER.unlink(missing_ok=True)
    yield
    assert not MARKER.exists(), "a payload ran"


# -- payloads: each would create MARKER if anything called it ---------------------------------------------

class SystemCall:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


class EvalCall:
    def __reduce__(self):
        return (eval, (f"open({str(MARKER)!r}, 'w').close()",))


class ExecCall:
    def __reduce__(self):
        return (exec, (f"open({str(MARKER)!r}, 'w').close()",))


class PopenCall:
    def __reduce__(self):
        return (subprocess.Popen, (["touch", str(MARKER)],))


class Reconstructor:  # copyreg's generic rebuild of an arbitrary class
    def __reduce__(self):
        import copyreg
        return (copyreg._reconstructor, (subprocess.Popen, object, None))


def nested(payload):
    """A payload deep inside plain containers, beside real weights."""
    return {"state_dict": {"w": torch.zeros(3)}, "meta": {"a": [1, {"b": (2, {"c": payload})}]}}


PAYLOADS = {"os.system": SystemCall, "builtins.eval": EvalCall, "builtins.exec": ExecCall,
            "subprocess.Popen": PopenCall, "copyreg._reconstructor": Reconstructor}

#: hand-written pickles (protocol 0) that reach os.system without naming it as a global
RAW_PICKLES = {
    "getattr_import": f"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(Vtouch {MARKER}\ntR.",
    "partial": f"cfunctools\npartial\n(cos\nsystem\nVtouch {MARKER}\ntR(tR.",
    "posix_system": f"cposix\nsystem\n(Vtouch {MARKER}\ntR.",
}


def _write(path: Path, obj, fmt: str) -> Path:
    if fmt == "pickle":
        path.write_bytes(pickle.dumps(obj, protocol=2))
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=fmt == "zip")
    return path


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("fmt", ["zip", "legacy", "pickle"])
@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_hostile_pickle_is_refused_naming_the_global_and_nothing_runs(tmp_path, name, fmt):
    path = _write(tmp_path / f"evil.{fmt}.ckpt", nested(PAYLOADS[name]()), fmt)
    with pytest.raises(CheckpointError, match="refusing to load") as err:
        safe_torch_load(path)
    shown = {"os.system": "posix.system" if os.name == "posix" else "nt.system"}.get(name, name)
    assert shown in str(err.value)   # named as Python 3 sees it (protocol 2 writes commands.Popen)
    for ext in ("pt", "pth", "bin", "ckpt"):  # every path through which a codec is loaded
        target = tmp_path / f"model.{ext}"
        target.write_bytes(path.read_bytes())
        with pytest.raises(CheckpointError, match="refusing"):
            audiocodec.load_codec(target)
    if fmt == "zip" and name == "os.system":   # the payload is real: an unsafe load runs it
        torch.load(path, weights_only=False)
        assert MARKER.exists()
        MARKER.unlink()


@pytest.mark.parametrize("name", sorted(RAW_PICKLES))
def test_hand_written_gadget_pickles_are_refused_or_inert(tmp_path, name):
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(RAW_PICKLES[name].encode())
    pickle.loads(path.read_bytes())          # the gadget is real: plain pickle runs it
    assert MARKER.exists()
    MARKER.unlink()
    with pytest.raises(CheckpointError, match="refusing|cannot read checkpoint .* safely"):
        safe_torch_load(path)


def test_allow_listed_names_are_inert_stand_ins_even_when_the_real_object_is_importable(tmp_path, monkeypatch):
    """A global under an allow-listed prefix (``numpy.``) that is really a payload: it is rebuilt as an inert
    stand-in, never looked up, even though the module is importable."""
    import types

    def system(*args):
        open(MARKER, "w").close()
    fake = types.ModuleType("numpy.evil_fault_test")
    system.__module__, system.__qualname__ = fake.__name__, "system"
    fake.system = system
    monkeypatch.setitem(sys.modules, fake.__name__, fake)

    class Call:
        def __reduce__(self):
            return (system, ("touch",))
    path = tmp_path / "allow.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "callback": Call()}, path)
    out = safe_torch_load(path)
    assert isinstance(out["callback"], OpaqueObject) and out["callback"].args == ("touch",)
    assert torch.equal(out["state_dict"]["w"], torch.ones(2))


def test_custom_class_is_refused_without_importing_its_module(tmp_path, monkeypatch):
    module = f"evil_fault_module_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(f"""
        open({str(MARKER)!r}, "w").close()     # runs on import
        class Thing:
            def __init__(self):
                self.weights = [1, 2, 3]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = __import__(module)
    MARKER.unlink()
    for fmt in ("zip", "legacy"):
        path = _write(tmp_path / f"custom.{fmt}.pt", {"state_dict": {"w": torch.zeros(1)}, "obj": mod.Thing()}, fmt)
        del sys.modules[module]   # importable (still on sys.path), not imported
        with pytest.raises(CheckpointError, match=f"refusing to load .*{module}.Thing"):
            safe_torch_load(path)
        assert module not in sys.modules
        sys.modules[module] = mod
    # the command line converts nothing and says why
    from audiocodec.cli import main
    del sys.modules[module]
    assert main(["convert", str(tmp_path / "custom.zip.pt"), str(tmp_path / "out.safetensors")]) == 2
    assert not (tmp_path / "out.safetensors").exists() and module not in sys.modules


def test_hostile_training_state_is_refused_and_resume_falls_back(tmp_path):
    from audiocodec.train import Trainer, list_checkpoints, load_checkpoint
    from audiocodec.train import checkpoint as ckpt
    config = {"task": {"type": "toy_regression", "num_samples": 32, "val_samples": 0},
              "trainer": {"max_steps": 4, "batch_size": 8, "ckpt_every": 2, "log_every": 1, "val_every": 0,
                          "threads": 1, "progress": False, "device": "cpu"}}
    Trainer(config, tmp_path).fit()
    latest = list_checkpoints(tmp_path / "checkpoints")[-1]
    state = torch.load(latest / ckpt.STATE_FILE, weights_only=True)
    state["task"] = {"steps_seen": SystemCall()}
    torch.save(state, latest / ckpt.STATE_FILE)
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(latest)
    assert Trainer(config, tmp_path).step == 2                      # resume skips it
    with pytest.raises(CheckpointError):
        Trainer(config, tmp_path, overrides=[f"trainer.resume={latest}"])


def test_hostile_token_shard_is_refused(tmp_path):
    import numpy as np
    from audiocodec.data.tokens import TokenShardError, read_shard
    np.savez(tmp_path / "shard-r000-000000.npz", tokens=np.array([SystemCall()], dtype=object),
             lengths=np.array([1]), records=np.zeros(2, np.uint8), meta=np.zeros(2, np.uint8))
    with pytest.raises(TokenShardError, match="cannot read"):
        read_shard(tmp_path / "shard-r000-000000.npz")


# -- configs ------------------------------------------------------------------------------------------

HOSTILE_TYPES = ["os.system", "builtins.eval", "subprocess.Popen", "audiocodec.train.toy.ToyRegression",
                 "this.s", "__import__", ["os", "system"], {"module": "os"}, None, 3]


@pytest.mark.parametrize("kind", HOSTILE_TYPES, ids=str)
def test_registries_refuse_paths_and_objects_as_types(kind):
    registry = Registry("thing")
    registry.register("ok")(dict)
    had_this = "this" in sys.modules
    with pytest.raises(ConfigError, match="unknown thing type"):
        registry.build({"type": kind, "x": 1})
    assert had_this or "this" not in sys.modules      # nothing was imported to look the name up
    with pytest.raises(ConfigError):
        audiocodec.build_codec("encodec-24k", encoder={"type": kind})
    from audiocodec.train import TASKS
    with pytest.raises(ConfigError, match="unknown task type"):
        TASKS.build({"type": kind}, "task")


def test_training_configs_cannot_name_code(tmp_path):
    from audiocodec.train import Trainer
    from audiocodec.train.cli import main as train_main
    base = {"task": {"type": "toy_regression", "num_samples": 16}, "trainer": {"max_steps": 1, "batch_size": 8}}
    for kind in ("os.system", "audiocodec.train.toy.ToyRegression"):
        with pytest.raises(ConfigError, match="unknown task type"):
            Trainer({**base, "task": {"type": kind}}, tmp_path / "r")
        with pytest.raises(ConfigError, match="unknown task type"):
            Trainer(base, tmp_path / "r", overrides=[f"task.type={kind}"])
    # YAML tags that would build Python objects are refused, in files and in --set values
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"task: !!python/object/apply:os.system ['touch {MARKER}']\ntrainer: {{max_steps: 1}}\n")
    with pytest.raises(ConfigError, match="not a valid YAML config"):
        load_yaml(evil)
    assert train_main([str(evil), "--run-dir", str(tmp_path / "r2")]) == 2
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_override(f"task.type=!!python/object/apply:os.system ['touch {MARKER}']")
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(base))
    assert train_main([str(plain), "--run-dir", str(tmp_path / "r3"),
                       "--set", "task.type=!!python/name:os.system"]) == 2


# -- safetensors metadata ---------------------------------------------------------------------------

def _codec_file(tmp_path: Path, meta: dict) -> Path:
    codec = tiny_codec()
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in codec.state_dict().items()}, str(path), metadata=meta)
    return path


_CONFIG = json.dumps(tiny_codec().config)
CODEC_META = [
    pytest.param({}, "has no audiocodec config in its metadata", id="no-metadata"),
    pytest.param({"format": "other", "config": _CONFIG}, "has no audiocodec config", id="other-format"),
    pytest.param({"format": "audiocodec", "kind": "vocoder", "config": _CONFIG}, "is a vocoder", id="vocoder"),
    pytest.param({"format": "audiocodec", "config": _CONFIG.replace('"seanet"', '"os.system"', 1)},
                 "unknown encoder type 'os.system'", id="hostile-type"),
    pytest.param({"format": "audiocodec", "config": json.dumps({**json.loads(_CONFIG), "sample_rate": 16000,
                                                                "encoder": {"type": "seanet", "dimension": 99}})},
                 "shape mismatch|missing key|unexpected key|do not fit", id="config-does-not-fit"),
    pytest.param({"format": "audiocodec"}, "config", id="no-config"),
    pytest.param({"format": "audiocodec", "config": "{not json"}, "config", id="bad-json"),
    pytest.param({"format": "audiocodec", "config": "[1, 2]"}, "config", id="config-not-a-mapping"),
]


@pytest.mark.parametrize("meta, message", CODEC_META)
def test_codec_safetensors_with_wrong_metadata_is_refused_clearly(tmp_path, meta, message):
    path = _codec_file(tmp_path, meta)
    with pytest.raises(AudioCodecError, match=message):
        audiocodec.load_codec(path)


def _tts_file(tmp_path: Path, meta: dict) -> Path:
    path = tmp_path / "tts.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata=meta)
    return path


TTS_META = [
    pytest.param({}, "not an audiocodec-tts model", id="no-metadata"),
    pytest.param({"format": "audiocodec", "config": _CONFIG}, "not an audiocodec-tts model", id="codec-file"),
    pytest.param({"format": "audiocodec-tts"}, "no readable config", id="no-config"),
    pytest.param({"format": "audiocodec-tts", "config": "{oops"}, "no readable config", id="bad-json"),
    pytest.param({"format": "audiocodec-tts", "config": "[1, 2]"}, "config", id="config-not-a-mapping"),
    pytest.param({"format": "audiocodec-tts", "config": json.dumps({"vocab": {}, "lm": {}, "text": {}, "codec": {},
                                                                  "evil": "os.system"})},
                 "evil", id="unknown-key"),
]


@pytest.mark.parametrize("meta, message", TTS_META)
def test_tts_safetensors_with_wrong_metadata_is_refused_clearly(tmp_path, meta, message):
    from audiocodec.tts.model import load_tts
    with pytest.raises(AudioCodecError, match=message):
        load_tts(_tts_file(tmp_path, meta))
