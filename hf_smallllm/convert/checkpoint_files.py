"""Reading and writing checkpoint files for conversion, one shard at a time.

- `CheckpointReader`: the tensors of a checkpoint folder (`model.safetensors`, sharded safetensors with an index,
  `pytorch_model.bin` and its shards) or a single file (`.safetensors`, `.bin`, `.pth`/`.pt`, e.g. lit-gpt's
  `iter-XXXXXX-ckpt.pth`). Shapes are read first (safetensors headers; pickles memory-mapped), tensors are then
  streamed file by file. Pickles are always loaded with `weights_only=True`.
- `ShardedSafetensorsWriter`: safetensors shards of at most `max_shard_bytes` plus `model.safetensors.index.json`
  (transformers' names; a single shard is `model.safetensors`), holding at most one shard in memory.
- `staged_output`: a folder written under a temporary name next to the destination and renamed only when
  everything (including the logit check) succeeded; on failure it is removed and an earlier output stays intact.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from transformers.utils.hub import convert_file_size_to_int

from ..errors import UsageFileNotFoundError, UsageValueError
from ..runfiles import atomic_folder, current_umask

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_SINGLE = "pytorch_model.bin"
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt")

# safetensors header dtype names
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}

# Files of a checkpoint folder that describe the tokenizer; conversions carry them over unchanged.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
    "vocab.json", "vocab.txt", "merges.txt", "chat_template.jinja", "chat_template.json",
)
TOKENIZER_PATTERNS = ("tokenization_*.py", "*.tiktoken")



def _opened_safetensors(file: Path):
    """`safe_open` whose failure on a truncated or garbage file is a UsageValueError naming the file."""
    try:
        return safe_open(file, framework="pt")
    except SafetensorError as err:
        raise UsageValueError(f"{file}: not a readable safetensors file ({err})") from None

@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        numel = 1
        for size in self.shape:
            numel *= size
        return numel * torch.empty((), dtype=self.dtype).element_size()


class CheckpointReader:
    """The tensors of one checkpoint, read one file at a time."""

    def __init__(self, files: list[Path], location: Path):
        self.files = files
        self.location = location
        self._infos: dict[str, TensorInfo] | None = None
        self.extras: dict[str, object] = {}  # non-tensor entries of a training checkpoint (e.g. lit-gpt iter_num)

    @classmethod
    def open(cls, path: str | os.PathLike) -> CheckpointReader:
        path = Path(path)
        if not path.exists():
            raise UsageFileNotFoundError(f"checkpoint not found: {path}")
        if path.is_file():
            if path.suffix != ".safetensors" and path.suffix not in PICKLE_SUFFIXES:
                raise ValueError(f"{path}: unknown checkpoint file type {path.suffix!r}; expected .safetensors or "
                                 f"one of {', '.join(PICKLE_SUFFIXES)}")
            return cls([path], path)
        for index_name, single_name in ((SAFETENSORS_INDEX, SAFETENSORS_SINGLE), (BIN_INDEX, BIN_SINGLE)):
            if (path / index_name).is_file():
                weight_map = json.loads((path / index_name).read_text())["weight_map"]
                files = [path / name for name in sorted(set(weight_map.values()))]
                missing = [str(f) for f in files if not f.is_file()]
                if missing:
                    raise UsageFileNotFoundError(f"{path / index_name} names shard files that do not exist: {missing}")
                return cls(files, path)
            if (path / single_name).is_file():
                return cls([path / single_name], path)
        raise UsageFileNotFoundError(
            f"no weights in {path}: expected {SAFETENSORS_SINGLE}, {SAFETENSORS_INDEX}, {BIN_SINGLE} or {BIN_INDEX}"
        )

    # ------------------------------------------------------------------ reading
    def infos(self) -> dict[str, TensorInfo]:
        """Shape and dtype of every tensor, without reading safetensors data."""
        if self._infos is None:
            infos: dict[str, TensorInfo] = {}
            owners: dict[str, Path] = {}
            for file in self.files:
                for key, info in self._file_infos(file):
                    if key in infos:
                        raise ValueError(f"tensor {key!r} is stored twice: in {owners[key]} and in {file}")
                    infos[key], owners[key] = info, file
            self._infos = infos
        return self._infos

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(key, tensor) for every tensor, file by file; only the current file is open."""
        for file in self.files:
            if file.suffix == ".safetensors":
                with _opened_safetensors(file) as handle:
                    for key in handle.keys():
                        yield key, handle.get_tensor(key)
            else:
                state = self._load_pickle(file)
                for key in list(state):
                    yield key, state.pop(key)
                del state

    def load_all(self) -> dict[str, torch.Tensor]:
        return dict(self.tensors())

    def _file_infos(self, file: Path) -> Iterator[tuple[str, TensorInfo]]:
        if file.suffix == ".safetensors":
            with _opened_safetensors(file) as handle:
                for key in handle.keys():
                    tensor_slice = handle.get_slice(key)
                    yield key, TensorInfo(tuple(tensor_slice.get_shape()),
                                          _SAFETENSORS_DTYPES[tensor_slice.get_dtype()])
        else:
            for key, tensor in self._load_pickle(file).items():
                yield key, TensorInfo(tuple(tensor.shape), tensor.dtype)

    def _load_pickle(self, file: Path) -> dict[str, torch.Tensor]:
        try:
            try:  # memory-mapped: the storages stay on disk until a tensor is touched
                loaded = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):
                    raise
                loaded = torch.load(file, map_location="cpu", weights_only=True)  # legacy (non-zip) format
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"{file}: refusing to unpickle it with weights_only=True (it holds objects other than tensors and "
                f"plain containers, which could run code): {str(err).splitlines()[0]}"
            ) from err
        except (EOFError, IndexError, RuntimeError, OSError) as err:  # truncated, or not a torch file at all
            raise UsageValueError(f"{file}: not a readable PyTorch checkpoint ({type(err).__name__}: "
                                  f"{' '.join(str(err).split())[:200]})") from None
        return self._state_dict_of(loaded, file)

    def _state_dict_of(self, loaded: object, file: Path) -> dict[str, torch.Tensor]:
        """The flat {name: tensor} dict of a pickle: either the file itself or, for training checkpoints (lit-gpt,
        Lightning Fabric), its "model" / "state_dict" entry."""
        if not isinstance(loaded, dict):
            raise ValueError(f"{file}: expected a dict of tensors, found {type(loaded).__name__}")
        if loaded and all(isinstance(value, torch.Tensor) for value in loaded.values()):
            return loaded
        for entry in ("model", "state_dict"):
            nested = loaded.get(entry)
            if isinstance(nested, dict) and nested and all(isinstance(v, torch.Tensor) for v in nested.values()):
                self.extras.update({k: v for k, v in loaded.items() if isinstance(v, (int, float, str))})
                return nested
        not_tensors = sorted(k for k, v in loaded.items() if not isinstance(v, torch.Tensor))
        raise ValueError(f"{file}: not a state dict; entries that are not tensors: {not_tensors[:20]}")


# ---------------------------------------------------------------------------------------------------------- writing
@dataclass(frozen=True)
class WrittenWeights:
    files: tuple[str, ...]
    total_bytes: int
    num_tensors: int


class ShardedSafetensorsWriter:
    """Collects tensors into safetensors shards of at most `max_shard_bytes` (a tensor larger than that gets a shard
    of its own) and writes the index at `close()`."""

    def __init__(self, folder: Path, max_shard_bytes: int | str = "2GB"):
        self.folder = Path(folder)
        self.max_shard_bytes = parse_size(max_shard_bytes)
        self._buffer: dict[str, torch.Tensor] = {}
        self._buffer_bytes = 0
        self._parts: list[tuple[Path, list[str]]] = []
        self._total_bytes = 0
        self._num_tensors = 0

    def add(self, key: str, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self._buffer and self._buffer_bytes + nbytes > self.max_shard_bytes:
            self._flush()
        self._buffer[key] = tensor
        self._buffer_bytes += nbytes
        self._total_bytes += nbytes
        self._num_tensors += 1

    def _flush(self) -> None:
        part = self.folder / f"shard-{len(self._parts) + 1:05d}.partial"
        save_file(self._buffer, part, metadata={"format": "pt"})
        self._parts.append((part, sorted(self._buffer)))
        self._buffer, self._buffer_bytes = {}, 0

    def close(self) -> WrittenWeights:
        if self._buffer or not self._parts:
            self._flush()
        count = len(self._parts)
        if count == 1:
            names = [SAFETENSORS_SINGLE]
        else:
            names = [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
        weight_map = {}
        mode = _default_file_mode()
        for (part, keys), name in zip(self._parts, names, strict=True):
            part.chmod(mode)  # safetensors creates files readable by their owner only
            part.rename(self.folder / name)
            weight_map.update({key: name for key in keys})
        if count > 1:
            index = {"metadata": {"total_size": self._total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
            (self.folder / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")
        return WrittenWeights(tuple(names), self._total_bytes, self._num_tensors)


def _default_file_mode() -> int:
    return 0o666 & ~current_umask()


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string such as "2GB" / "500MB" / "1GiB"."""
    try:
        value = convert_file_size_to_int(size)
    except (ValueError, TypeError) as err:
        raise ValueError(f"invalid size {size!r}: use bytes or a number with a unit, e.g. 2GB, 500MB") from err
    if value <= 0:
        raise ValueError(f"invalid size {size!r}: must be positive")
    return value


# ---------------------------------------------------------------------------------------------------- output folder
def check_output_path(output: Path, sources: list[Path], overwrite: bool) -> None:
    """Refuse before any work starts: an existing output without `overwrite`, or an output that is (or contains) a
    source."""
    output = Path(output).resolve()
    for source in sources:
        source = Path(source).resolve()
        if output == source or source.is_relative_to(output) or output.is_relative_to(source):
            raise ValueError(f"the output {output} must be outside the source {source}")
    if output.exists():
        if not output.is_dir():
            raise ValueError(f"the output {output} exists and is not a folder")
        if not overwrite:
            raise UsageValueError(f"the output {output} already exists; pass overwrite=True (--overwrite) to replace "
                                  "it")


def staged_output(output: str | os.PathLike):
    """Yield an empty staging folder next to `output`; on success it replaces `output`, on any error it is removed
    (`hf_smallllm.runfiles.atomic_folder`)."""
    return atomic_folder(output)


def copy_tokenizer_files(source: Path, destination: Path) -> list[str]:
    """Copy the tokenizer files of a checkpoint folder (names above); returns the names copied."""
    source = Path(source)
    if not source.is_dir():
        return []
    names = {name for name in TOKENIZER_FILES if (source / name).is_file()}
    for pattern in TOKENIZER_PATTERNS:
        names.update(p.name for p in source.glob(pattern) if p.is_file())
    for name in sorted(names):
        shutil.copy2(source / name, destination / name)
    return sorted(names)


__all__ = [
    "CheckpointReader",
    "ShardedSafetensorsWriter",
    "TensorInfo",
    "WrittenWeights",
    "check_output_path",
    "copy_tokenizer_files",
    "parse_size",
    "staged_output",
]
