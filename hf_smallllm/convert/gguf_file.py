"""Whether a file is a readable, complete GGUF file, decided from its bytes before anything else reads it.

`check_gguf_file_complete` walks the header, every metadata entry and every tensor record of a GGUF file with
bounds checks, without allocating anything the file's counts ask for, and checks that every tensor's data lies
inside the file. A file that fails raises `InvalidGGUFError` (a `UsageValueError`: the command line prints it as
one line naming the file and the problem). Readers that trust the file (transformers' GGUF reader, llama.cpp) are
called only afterwards: on a damaged file they raise struct.error / UnicodeDecodeError, loop over a count of 2**62,
read a truncated file as if it were whole, or (llama.cpp, on some damage) abort the process.

The layout checked (little-endian, as llama.cpp reads it; version 2 or 3):

    magic "GGUF" | version u32 | tensor count u64 | metadata count u64
    metadata entries: key (u64 length + UTF-8) | value type u32 | value
        value: fixed-size scalar, string (u64 length + bytes) or array (element type u32 | count u64 | elements)
    tensor records: name (string) | dimension count u32 (at most 4) | dimensions u64 each | ggml type u32 |
        offset u64 (from the data section, a multiple of the alignment)
    padding to `general.alignment` (u32, a power of two; 32 when absent) | tensor data

`check_output_file` is the other side: whether a file can be created where the user asks for one (an export, a
JSON report), checked before the long work whose result goes there.

Standard library only, except the ggml type sizes, taken from the `gguf` package when it is installed.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageFileNotFoundError, UsageValueError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # version 1 counted in 32 bits; llama.cpp reads 2 and 3
HEADER_BYTES = 24
MAX_DIMENSIONS = 4  # GGML_MAX_DIMS
DEFAULT_ALIGNMENT = 32

_STRING, _ARRAY = 8, 9
# metadata value type -> struct format of the fixed-size scalars
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_TYPE_NAMES = {0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32", 6: "float32", 7: "bool",
               8: "string", 9: "array", 10: "uint64", 11: "int64", 12: "float64"}
# the smallest a metadata entry / tensor record can be: an empty key and a 1-byte value; an empty name and no dims
_MIN_ENTRY_BYTES = 8 + 4 + 1
_MIN_TENSOR_BYTES = 8 + 4 + 4 + 8
# ggml type -> (elements per block, bytes per block) of the types this package writes, used when `gguf` is missing
_BASIC_TYPE_SIZES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 8: (32, 34), 30: (1, 2)}


class InvalidGGUFError(UsageValueError):
    """A file given as GGUF is not a readable, complete GGUF file (truncated, corrupt, or not GGUF at all)."""


@dataclass(frozen=True)
class GGUFTensorRecord:
    name: str
    shape: tuple[int, ...]  # ggml order: fastest-moving dimension first
    ggml_type: int
    offset: int  # from the start of the data section
    nbytes: int | None  # None for a ggml type whose size is not known here


@dataclass(frozen=True)
class GGUFFileInfo:
    """What the check read: the header, the scalar metadata (arrays as `array_lengths`) and the tensor records."""

    path: Path
    size: int
    version: int
    metadata: dict[str, Any]
    array_lengths: dict[str, int]
    tensors: tuple[GGUFTensorRecord, ...]
    data_offset: int
    alignment: int = DEFAULT_ALIGNMENT

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")


class _Truncated(Exception):
    """The file ends before what it says it holds (cut off, or a count or length that is corrupt)."""


class _Corrupt(Exception):
    """A field holds what no GGUF file can."""


def _type_sizes() -> dict[int, tuple[int, int]]:
    try:
        from gguf import GGML_QUANT_SIZES
    except ImportError:
        return dict(_BASIC_TYPE_SIZES)
    return {int(kind): (int(block), int(size)) for kind, (block, size) in GGML_QUANT_SIZES.items()}


class _Reader:
    """Bounded reads from the mapped file: every read checks that the bytes are there first."""

    def __init__(self, data, size: int):
        self.data, self.size, self.pos = data, size, 0

    def ends_inside(self, what: str) -> _Truncated:
        return _Truncated(f"it ends at byte {self.size:,}, inside {what}")

    def need(self, count: int, what: str) -> int:
        """Offset of the next `count` bytes, which must be inside the file; advances past them."""
        if count < 0 or count > self.size - self.pos:
            raise self.ends_inside(what)
        start = self.pos
        self.pos += count
        return start

    def unpack(self, fmt: str, what: str):
        return struct.unpack_from(fmt, self.data, self.need(struct.calcsize(fmt), what))[0]

    def string(self, what: str, decode: bool = True) -> str | None:
        length = self.unpack("<Q", what)
        start = self.need(length, what)
        if not decode:
            return None
        try:
            return bytes(self.data[start:start + length]).decode("utf-8")
        except UnicodeDecodeError:
            raise _Corrupt(f"{what} is not UTF-8 text") from None

    def skip_strings(self, count: int, what: str) -> None:
        """Walk `count` strings without decoding them (a vocabulary or merge table)."""
        data, size, pos = self.data, self.size, self.pos
        length_of = struct.Struct("<Q").unpack_from
        for index in range(count):
            if pos + 8 > size:
                raise self.ends_inside(f"{what}, element {index:,} of {count:,}")
            pos += 8 + length_of(data, pos)[0]
            if pos > size:
                raise self.ends_inside(f"{what}, element {index:,} of {count:,}")
        self.pos = pos


def _read_value(reader: _Reader, value_type: int, key: str):
    """One metadata value: a scalar or string as itself, an array as its length (elements skipped)."""
    if value_type in _SCALARS:
        return reader.unpack(_SCALARS[value_type], f"the value of {key!r}"), None
    if value_type == _STRING:
        return reader.string(f"the value of {key!r}"), None
    if value_type != _ARRAY:
        raise _Corrupt(f"metadata entry {key!r} has value type {value_type}, which GGUF does not define")
    element_type = reader.unpack("<I", f"the array {key!r}")
    count = reader.unpack("<Q", f"the array {key!r}")
    remaining = reader.size - reader.pos
    if element_type in _SCALARS:
        width = struct.calcsize(_SCALARS[element_type])
        if count * width > remaining:
            raise _Truncated(f"array {key!r} claims {count:,} {_TYPE_NAMES[element_type]} elements "
                             f"({count * width:,} bytes) but only {remaining:,} bytes follow")
        reader.need(count * width, f"the array {key!r}")
    elif element_type == _STRING:
        if count * 8 > remaining:
            raise _Truncated(f"array {key!r} claims {count:,} strings but only {remaining:,} bytes follow")
        reader.skip_strings(count, f"the array {key!r}")
    elif element_type == _ARRAY:
        raise _Corrupt(f"metadata entry {key!r} is an array of arrays, which llama.cpp does not read")
    else:
        raise _Corrupt(f"array {key!r} has element type {element_type}, which GGUF does not define")
    return None, count


def _check_count(count: int, least_bytes: int, what: tuple[str, str], remaining: int, after: str) -> None:
    """`count` records (`what`: singular, plural) of at least `least_bytes` each must fit in the `remaining` bytes
    after `after`."""
    if count * least_bytes > remaining:
        raise _Truncated(f"the header claims {count:,} {what[count != 1]} but only {remaining:,} bytes follow "
                         f"{after}")


def _walk(path: Path, data, size: int) -> GGUFFileInfo:
    reader = _Reader(data, size)
    magic = bytes(data[:4])
    if magic != GGUF_MAGIC:
        if GGUF_MAGIC.startswith(magic):  # a prefix of the magic: cut off within the first bytes
            raise reader.ends_inside(f"the {HEADER_BYTES}-byte header")
        raise _Corrupt(f"it starts with {magic!r}, not the GGUF magic {GGUF_MAGIC!r}")
    reader.pos = 4
    version = reader.unpack("<I", f"the {HEADER_BYTES}-byte header")
    if version not in SUPPORTED_VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in SUPPORTED_VERSIONS:
            raise _Corrupt(f"it is a big-endian GGUF (version {swapped}); llama.cpp reads little-endian files")
        raise _Corrupt(f"GGUF version {version}; supported: {', '.join(map(str, SUPPORTED_VERSIONS))}")
    tensor_count = reader.unpack("<Q", f"the {HEADER_BYTES}-byte header")
    entry_count = reader.unpack("<Q", f"the {HEADER_BYTES}-byte header")
    # counts against the bytes that are there, before looping over them: a corrupt count of 2**62 stops here
    _check_count(entry_count, _MIN_ENTRY_BYTES, ("metadata entry", "metadata entries"), size - reader.pos, "it")
    _check_count(tensor_count, _MIN_TENSOR_BYTES, ("tensor record", "tensor records"), size - reader.pos, "it")

    metadata: dict[str, Any] = {}
    array_lengths: dict[str, int] = {}
    for index in range(entry_count):
        key = reader.string(f"the key of metadata entry {index + 1:,} of {entry_count:,}")
        if key in metadata or key in array_lengths:
            raise _Corrupt(f"metadata key {key!r} appears twice")
        value_type = reader.unpack("<I", f"metadata entry {key!r}")
        value, length = _read_value(reader, value_type, key)
        if length is None:
            metadata[key] = value
        else:
            array_lengths[key] = length

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if "general.alignment" in metadata and (not isinstance(alignment, int) or isinstance(alignment, bool)
                                            or alignment <= 0 or alignment & (alignment - 1)):
        raise _Corrupt(f"general.alignment is {alignment!r}; it must be a power of two")
    if "general.alignment" in array_lengths:
        raise _Corrupt("general.alignment is an array; it must be a uint32")
    _check_count(tensor_count, _MIN_TENSOR_BYTES, ("tensor record", "tensor records"), size - reader.pos,
                 "the metadata")

    sizes = _type_sizes()
    records, names = [], set()
    for index in range(tensor_count):
        name = reader.string(f"the name of tensor {index + 1:,} of {tensor_count:,}")
        if name in names:
            raise _Corrupt(f"tensor {name!r} appears twice")
        names.add(name)
        dims = reader.unpack("<I", f"tensor {name!r}")
        if dims > MAX_DIMENSIONS:
            raise _Corrupt(f"tensor {name!r} has {dims:,} dimensions; GGUF allows at most {MAX_DIMENSIONS}")
        shape = tuple(reader.unpack("<Q", f"tensor {name!r}") for _ in range(dims))
        ggml_type = reader.unpack("<I", f"tensor {name!r}")
        offset = reader.unpack("<Q", f"tensor {name!r}")
        if offset % alignment:
            raise _Corrupt(f"tensor {name!r} starts at offset {offset:,}, not a multiple of the alignment {alignment}")
        nbytes = None
        if ggml_type in sizes:
            block, type_size = sizes[ggml_type]
            if shape and shape[0] % block:
                raise _Corrupt(f"tensor {name!r} has rows of {shape[0]:,} elements, not whole blocks of {block} of "
                               f"its ggml type {ggml_type}")
            elements = 1
            for dim in shape:
                elements *= dim
            nbytes = elements // block * type_size
        records.append(GGUFTensorRecord(name, shape, ggml_type, offset, nbytes))

    data_offset = -(-reader.pos // alignment) * alignment
    for record in records:
        end = data_offset + record.offset + (record.nbytes or 0)
        if end > size:
            raise reader.ends_inside(f"the data of tensor {record.name!r} (bytes {data_offset + record.offset:,} to "
                                     f"{end:,})")
    if "general.architecture" not in metadata:
        raise _Corrupt("it has no general.architecture in its metadata")
    if not isinstance(metadata["general.architecture"], str):
        raise _Corrupt("its general.architecture is not a string")
    return GGUFFileInfo(path, size, version, metadata, array_lengths, tuple(records), data_offset, alignment)


def check_gguf_file_complete(path: str | os.PathLike, *, option: str | None = None) -> GGUFFileInfo:
    """Raise `InvalidGGUFError` unless `path` is a readable, complete GGUF file (see the module docstring); return
    what was read. `option`: the command-line option that named the file, for the message (e.g. "--gguf-file").
    A missing path is a `UsageFileNotFoundError`. Reads only the header and metadata (a vocabulary's strings are
    walked, not decoded): about 0.1 s for a 100,000-entry vocabulary, whatever the size of the tensor data."""
    path = Path(path)
    named = f"{option} {path}" if option else str(path)
    if not path.exists():
        raise UsageFileNotFoundError(f"{named}: no such file")
    if path.is_dir():
        raise InvalidGGUFError(f"{named} is a folder, not a GGUF file")
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise InvalidGGUFError(f"{named} is not a GGUF file: it is empty (0 bytes)")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _walk(path, data, size)
    except InvalidGGUFError:
        raise
    except _Truncated as err:
        raise InvalidGGUFError(f"{named} is not a complete GGUF file: {err} (truncated or corrupt)") from None
    except _Corrupt as err:
        raise InvalidGGUFError(f"{named} is not a valid GGUF file: {err}") from None
    except (OSError, ValueError) as err:  # unreadable (permissions, a device), or a file that cannot be mapped
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise InvalidGGUFError(f"cannot read {named} as a GGUF file: {reason}") from None


def check_output_file(path: str | os.PathLike, label: str) -> None:
    """Raise a `UsageValueError` naming `label` (e.g. "output", "--json") unless a file can be created at `path`:
    `path` must not be a folder, and its nearest existing ancestor must be a folder that takes a new file. That is
    tried (a temporary file created and removed there), since permission bits say nothing for root or on a read-only
    file system. Meant to run before a long job whose result goes to `path`."""
    path = Path(path)
    if path.is_dir():
        raise UsageValueError(f"{label} {path} is a folder; give a file path")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageValueError(f"{label} {path}: {folder} is a file, not a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".hf-smallllm-write-check-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise UsageValueError(f"{label} {path}: cannot create a file in {folder} ({err.strerror or err})") from None


__all__ = ["GGUFFileInfo", "GGUFTensorRecord", "InvalidGGUFError", "check_gguf_file_complete", "check_output_file"]
