"""Checkpoints are read without running code: allow-listed training objects become inert stand-ins,
anything else refuses the file before it is unpickled."""
import collections
import contextlib
import os
import pickle
import sys
import types

import pytest
import torch

import audiocodec
from audiocodec.codecs.interop.safe_load import OpaqueObject, safe_torch_load, scan_globals
from audiocodec.errors import CheckpointError

BUILT = []  # every constructor / __setstate__ of the fake training classes appends here


class ModelCheckpoint:
    """Looks like Lightning's callback to pickle; its code must never run when loading."""

    def __init__(self):
        self.monitor, self.best_model_score, self.dirpath = "val_loss", torch.tensor(0.25), "/ckpts"

    def __setstate__(self, state):
        BUILT.append(("setstate", state))
        self.__dict__.update(state)

    def __reduce__(self):
        return (ModelCheckpoint, (), dict(self.__dict__))


class AttributeDict(dict):
    """Lightning's hparams dict (a dict subclass)."""


class DataConfig:
    def __init__(self, filelist_path, batch_size):
        BUILT.append(("init", filelist_path))
        self.filelist_path, self.batch_size = filelist_path, batch_size


FAKES = {
    "pytorch_lightning.callbacks.model_checkpoint": {"ModelCheckpoint": ModelCheckpoint},
    "pytorch_lightning.utilities.parsing": {"AttributeDict": AttributeDict},
    "decoder.dataset": {"DataConfig": DataConfig},
}


@contextlib.contextmanager
def fake_training_modules():
    """Register the fake classes under their library's module names while pickling, then remove them,
    so the loader could not import them even if it tried."""
    saved = dict(sys.modules)
    try:
        for mod_name, classes in FAKES.items():
            parts = mod_name.split(".")
            for i in range(1, len(parts)):
                sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
            module = types.ModuleType(mod_name)
            for cls_name, cls in classes.items():
                cls.__module__, cls.__qualname__ = mod_name, cls_name
                setattr(module, cls_name, cls)
            sys.modules[mod_name] = module
        yield
    finally:
        for name in list(sys.modules):
            if name not in saved:
                del sys.modules[name]


def lightning_checkpoint(state_dict):
    return {
        "epoch": 12, "global_step": 100000, "pytorch-lightning_version": "1.8.6",
        "state_dict": state_dict,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 13, "completed": 12}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": ModelCheckpoint(),
                      ModelCheckpoint: {"best_k_models": {"/ckpts/a.ckpt": torch.tensor(0.25)}}},  # PL < 1.5 keys
        "optimizer_states": [{"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(3)}},
                              "param_groups": [{"lr": 2e-4, "betas": (0.8, 0.9), "params": [0]}]}],
        "lr_schedulers": [{"base_lrs": [2e-4], "last_epoch": 5, "lr_lambdas": [None]}],
        "hparams_name": "kwargs",
        "hyper_parameters": AttributeDict(sample_rate=24000, initial_learning_rate=2e-4,
                                          data=DataConfig("./data/train", 40)),
        "extras": collections.defaultdict(list, {"seen": [1, 2]}),
    }


class SystemPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvalPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_plain_state_dict(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"a.weight": torch.randn(3, 2), "b": torch.arange(4)}, path)
    out = safe_torch_load(path)
    assert set(out) == {"a.weight", "b"} and torch.equal(out["b"], torch.arange(4))


def test_lightning_extras_become_inert_stand_ins(tmp_path):
    path = tmp_path / "model.ckpt"
    weights = {"backbone.embed.weight": torch.randn(4, 3, 7)}
    with fake_training_modules():
        torch.save(lightning_checkpoint(weights), path)
    BUILT.clear()
    assert "pytorch_lightning" not in sys.modules  # nothing to import them from
    with pytest.raises(pickle.UnpicklingError):  # not loadable by plain weights_only
        torch.load(path, weights_only=True)

    ckpt = safe_torch_load(path)
    assert torch.equal(ckpt["state_dict"]["backbone.embed.weight"], weights["backbone.embed.weight"])
    assert BUILT == [] and "pytorch_lightning" not in sys.modules  # no code of theirs ran or got imported
    cb = ckpt["callbacks"]["ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}"]
    assert isinstance(cb, OpaqueObject) and not isinstance(cb, ModelCheckpoint)
    assert cb.state["monitor"] == "val_loss" and torch.equal(cb.state["best_model_score"], torch.tensor(0.25))
    (cb_type,) = [k for k in ckpt["callbacks"] if not isinstance(k, str)]
    assert issubclass(cb_type, OpaqueObject) and cb_type is not ModelCheckpoint
    # dict subclasses load as plain dicts, other objects keep their data inertly
    hp = ckpt["hyper_parameters"]
    assert type(hp) is dict and hp["sample_rate"] == 24000
    assert isinstance(hp["data"], OpaqueObject) and hp["data"].state["filelist_path"] == "./data/train"
    assert type(ckpt["extras"]) is dict and ckpt["extras"]["seen"] == [1, 2]
    assert ckpt["optimizer_states"][0]["param_groups"][0]["betas"] == (0.8, 0.9)


def test_plain_dict_subclass_found_at_load_time(tmp_path, monkeypatch):
    """A dict subclass of an allow-listed module that is not in DICT_LIKE is found by retrying."""
    from audiocodec.codecs.interop import safe_load
    monkeypatch.setattr(safe_load, "DICT_LIKE", set())
    path = tmp_path / "hp.ckpt"
    with fake_training_modules():
        torch.save({"hyper_parameters": AttributeDict(a=1, b=[2])}, path)
    assert safe_torch_load(path) == {"hyper_parameters": {"a": 1, "b": [2]}}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("payload", [SystemPayload, EvalPayload])
@pytest.mark.parametrize("fmt", ["zip", "legacy", "pickle"])
def test_code_in_a_pickle_is_refused_and_not_run(tmp_path, payload, fmt):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil.{fmt}.ckpt"
    obj = {"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {"x": payload(marker)}}
    if fmt == "pickle":
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=fmt == "zip")
    name = "posix.system" if payload is SystemPayload and os.name == "posix" else None
    with pytest.raises(CheckpointError, match="refusing") as err:
        safe_torch_load(path)
    assert name is None or name in str(err.value)
    assert payload is SystemPayload or "builtins.eval" in str(err.value)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refusing"):
        audiocodec.load_codec(path)
    assert not marker.exists()
    # the payload is real: an unsafe load would have run it
    if fmt == "zip":
        torch.load(path, weights_only=False)
        assert marker.exists()


def test_payload_inside_an_allow_listed_object_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    with fake_training_modules():
        cb = ModelCheckpoint()
        cb.dirpath = SystemPayload(marker)
        torch.save({"state_dict": {}, "callbacks": {"ModelCheckpoint": cb}}, path)
    BUILT.clear()
    with pytest.raises(CheckpointError, match="posix.system|nt.system"):
        safe_torch_load(path)
    assert not marker.exists() and BUILT == []


def test_scan_globals_names_imports_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump([EvalPayload(marker)], f, protocol=4)
    assert "builtins.eval" in scan_globals(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip"])
def test_unreadable_files_raise_checkpoint_error(tmp_path, content):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        safe_torch_load(path)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "t.ckpt"
    torch.save({"state_dict": {"w": torch.randn(1000)}}, path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match="cannot read"):
        safe_torch_load(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        safe_torch_load(tmp_path / "nope.ckpt")


def test_saved_weights_are_readable_like_any_file(tmp_path):
    """safetensors' save_file makes owner-only files; ours follow the umask (models can be shared, installed)."""
    import os
    import stat
    import audiocodec
    from audiocodec.weights import write_safetensors
    umask = os.umask(0o022)
    try:
        path = write_safetensors({"a": torch.zeros(2)}, tmp_path / "w.safetensors", {"format": "test"})
        codec = audiocodec.build_codec("wavtokenizer-75", encoder={"n_filters": 4},
                                       decoder={"backbone": {"dim": 64, "intermediate_dim": 64, "num_layers": 1},
                                                "head": {"dim": 64}})
        saved = audiocodec.save_codec(codec, tmp_path / "codec.safetensors")
    finally:
        os.umask(umask)
    for p in (path, saved):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, oct(p.stat().st_mode)
    assert not list(tmp_path.glob(".*tmp*"))
