"""``Codes``: the tokens of a batch of audio plus what is needed to decode them exactly,
and the ``.npz`` file format they are stored in."""
from __future__ import annotations

import json
import math
import os
import threading
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Union

import numpy as np
import torch

from ..audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from ..errors import CodesError

CODES_FORMAT_VERSION = 1
#: A compressed member may not expand more than this (plus 1 MiB): a zip bomb is refused before it is inflated.
MAX_EXPANSION = 100


@dataclass
class Codes:
    """Tokens of a batch and their metadata.

    Attributes:
        tokens: ``LongTensor [B, K, T]``: K codebooks, T frames (padded to the longest item).
        lengths: ``LongTensor [B]``: valid frames of each item.
        model_id: name of the codec config that made them (e.g. ``"wavtokenizer-75"``).
        fingerprint: short hash of the codec's codebooks (tells two trainings of one config apart).
        sample_rate: the codec's sample rate (Hz); frame_rate: frames per second.
        cardinality: codebook size; tokens lie in ``[0, cardinality)``.
        input_sample_rate, input_lengths ``[B]``, input_channels: the audio as given to ``encode``,
            so that ``decode`` returns each item with exactly the input's duration.
    """
    tokens: torch.Tensor
    lengths: torch.Tensor
    model_id: str
    sample_rate: int
    frame_rate: float
    cardinality: int
    input_sample_rate: int
    input_lengths: torch.Tensor
    input_channels: int = 1
    fingerprint: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def num_codebooks(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def output_lengths(self) -> torch.Tensor:
        """Samples of each item at the codec's sample rate, matching the input durations."""
        return torch.round(self.input_lengths.double() * self.sample_rate / self.input_sample_rate).long()

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def to(self, device) -> "Codes":
        return replace(self, tokens=self.tokens.to(device))

    def __getitem__(self, index) -> "Codes":
        """Select items of the batch (an int keeps the batch dimension)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return replace(self, tokens=self.tokens[index], lengths=self.lengths[index],
                       input_lengths=self.input_lengths[index])

    def unbatch(self) -> list[torch.Tensor]:
        """The valid tokens of each item: a list of ``[K, T_i]``."""
        return [self.tokens[i, :, : int(n)] for i, n in enumerate(self.lengths)]

    # -- file format -----------------------------------------------------------------------------
    def save(self, path: Union[str, Path]) -> Path:
        """Write an ``.npz`` (no pickles): ``tokens``, ``lengths``, ``input_lengths`` and a JSON header."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = dict(format="audiocodec.codes", version=CODES_FORMAT_VERSION, model_id=self.model_id,
                      fingerprint=self.fingerprint, sample_rate=self.sample_rate, frame_rate=self.frame_rate,
                      cardinality=self.cardinality, input_sample_rate=self.input_sample_rate,
                      input_channels=self.input_channels, extra=self.extra)
        dtype = np.int16 if self.cardinality <= 2 ** 15 else np.int32
        # one temporary file per process and thread: concurrent saves to one path never mix their bytes
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, tokens=self.tokens.cpu().numpy().astype(dtype),
                         lengths=self.lengths.cpu().numpy().astype(np.int64),
                         input_lengths=self.input_lengths.cpu().numpy().astype(np.int64),
                         header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
            tmp.replace(path)
        finally:
            if tmp.exists():  # a failed write (full disk, bad value) leaves nothing behind
                tmp.unlink()
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Codes":
        """Read a file written by :meth:`save`; malformed files raise :class:`CodesError`."""
        path = Path(path)
        if not path.is_file():
            raise CodesError(f"codes file not found: {path}")
        try:
            _check_members(path)
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except CodesError:
            raise
        except Exception as e:  # noqa: BLE001 - zipfile, zlib and numpy raise many kinds of errors on corrupt files
            raise CodesError(f"cannot read codes file {path}: {e}") from e
        missing = {"tokens", "lengths", "input_lengths", "header"} - set(arrays)
        if missing:
            raise CodesError(f"codes file {path} lacks {sorted(missing)}: not written by audiocodec?")
        not_arrays = sorted(k for k, v in arrays.items() if not isinstance(v, np.ndarray))
        if not_arrays:  # np.load returns the raw bytes of a member that is not a .npy array
            raise CodesError(f"cannot read codes file {path}: {', '.join(not_arrays)} is not a numpy array "
                             "(corrupt file?)")
        try:
            header = json.loads(arrays["header"].tobytes().decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CodesError(f"codes file {path} has a corrupt header: {e}") from e
        if not isinstance(header, dict):
            raise CodesError(f"codes file {path} has a corrupt header: expected a JSON object, got "
                             f"{type(header).__name__}")
        if header.get("format") != "audiocodec.codes":
            raise CodesError(f"{path} is not an audiocodec codes file")
        version = header.get("version", 0)
        if isinstance(version, bool) or not isinstance(version, int):
            raise CodesError(f"codes file {path} has a corrupt header: version {version!r}")
        if version > CODES_FORMAT_VERSION:
            raise CodesError(f"{path} has format version {header['version']}; this audiocodec reads "
                             f"up to {CODES_FORMAT_VERSION}: upgrade audiocodec")
        tokens = arrays["tokens"]
        if tokens.ndim != 3 or not np.issubdtype(tokens.dtype, np.integer):
            raise CodesError(f"codes file {path}: tokens must be integers shaped [B, K, T], "
                             f"got {tokens.dtype} {tokens.shape}")
        b = tokens.shape[0]
        if arrays["lengths"].shape != (b,) or arrays["input_lengths"].shape != (b,):
            raise CodesError(f"codes file {path}: lengths do not match the batch size {b}")
        for key in ("lengths", "input_lengths"):
            if not np.issubdtype(arrays[key].dtype, np.integer):
                raise CodesError(f"codes file {path}: {key} must be integers, got {arrays[key].dtype}")
        if not isinstance(header.get("model_id"), str):
            raise CodesError(f"codes file {path} has an incomplete header: model_id {header.get('model_id')!r}")
        try:
            codes = cls(tokens=torch.from_numpy(tokens.astype(np.int64)),
                        lengths=torch.from_numpy(arrays["lengths"].astype(np.int64)),
                        input_lengths=torch.from_numpy(arrays["input_lengths"].astype(np.int64)),
                        model_id=str(header["model_id"]), fingerprint=str(header.get("fingerprint", "")),
                        sample_rate=int(header["sample_rate"]), frame_rate=float(header["frame_rate"]),
                        cardinality=int(header["cardinality"]), input_sample_rate=int(header["input_sample_rate"]),
                        input_channels=int(header.get("input_channels", 1)), extra=dict(header.get("extra", {})))
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise CodesError(f"codes file {path} has an incomplete header: {e}") from e
        codes.validate()
        _check_values(codes, path)
        return codes

    def validate(self, cardinality: int | None = None) -> "Codes":
        """Check shapes, ranges and lengths; raise :class:`CodesError` naming the problem."""
        t = validate_tokens(self.tokens, cardinality or self.cardinality)
        if (self.lengths < 0).any() or (self.lengths > t.shape[-1]).any():
            raise CodesError(f"lengths {self.lengths.tolist()} do not fit {t.shape[-1]} frames")
        return self


def _check_members(path: Path) -> None:
    """Refuse, before numpy reads them, members whose ``.npy`` header declares more data than the member
    holds (a forged shape would make numpy allocate it) and compressed members that inflate absurdly."""
    fmt = np.lib.format
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED and \
                    info.file_size > MAX_EXPANSION * info.compress_size + 2 ** 20:
                raise CodesError(f"cannot read codes file {path}: member {info.filename} inflates from "
                                 f"{info.compress_size} to {info.file_size} bytes (refused)")
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as f:
                version = fmt.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = fmt.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = fmt.read_array_header_2_0(f)
                else:
                    continue  # numpy judges other versions itself
                if dtype.hasobject:
                    continue  # np.load(allow_pickle=False) refuses it with its own message
                declared = dtype.itemsize * math.prod(shape)
                held = info.file_size - f.tell()
                if declared != held:
                    raise CodesError(f"cannot read codes file {path}: {info.filename} declares {dtype} {shape} "
                                     f"({declared} bytes) but holds {held} bytes (corrupt file?)")


def _check_values(codes: Codes, path: Path) -> None:
    """Header values a decoder relies on: plausible rates, a codebook size, and input lengths that fit the frames."""
    problems = []
    for key in ("sample_rate", "input_sample_rate"):
        value = getattr(codes, key)
        if not MIN_SAMPLE_RATE <= value <= MAX_SAMPLE_RATE:
            problems.append(f"{key} {value} Hz (expected {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE})")
    if not (math.isfinite(codes.frame_rate) and 0 < codes.frame_rate <= codes.sample_rate):
        problems.append(f"frame_rate {codes.frame_rate}")
    if not 1 <= codes.cardinality <= 2 ** 31 - 1:
        problems.append(f"cardinality {codes.cardinality}")
    if codes.input_channels < 1:
        problems.append(f"input_channels {codes.input_channels}")
    if problems:
        raise CodesError(f"codes file {path} has impossible header values: {', '.join(problems)}")
    if (codes.input_lengths < 0).any():
        raise CodesError(f"codes file {path}: negative input lengths {codes.input_lengths.tolist()}")
    hop = codes.sample_rate / codes.frame_rate
    fits = torch.ceil(codes.lengths.double() * hop) + 1
    if (codes.output_lengths.double() > fits).any():
        raise CodesError(f"codes file {path}: input lengths {codes.input_lengths.tolist()} (at "
                         f"{codes.input_sample_rate} Hz) are longer than their {codes.lengths.tolist()} frames")


def validate_tokens(tokens, cardinality: int) -> torch.Tensor:
    """Check that ``tokens`` is an integer tensor ``[B, K, T]`` with values in ``[0, cardinality)``."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3:
        raise CodesError(f"tokens must be a tensor [B, K, T], got {getattr(tokens, 'shape', type(tokens))}")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise CodesError(f"tokens must be integers, got {tokens.dtype}")
    if tokens.numel():
        lo, hi = (int(v) for v in torch.aminmax(tokens))  # one device sync for both bounds
        if lo < 0 or hi >= cardinality:
            raise CodesError(f"tokens out of range: found values in [{lo}, {hi}] but the codebook "
                             f"has {cardinality} entries (valid 0..{cardinality - 1})")
    return tokens
