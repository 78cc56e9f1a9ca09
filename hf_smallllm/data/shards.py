"""Prepared token shards on disk: the folder layout, the manifest, and the memory-mapped reader.

A prepared folder (written by `hf-smallllm data prepare`, see `prepare.py`) holds

    manifest.json                      what is in the folder (below); rewritten atomically
    <source>/shard-00000.tokens        token ids, little-endian uint16 (vocabulary <= 65,536) or uint32
    <source>/shard-00000.docs          uint64 end offset (exclusive, in tokens) of every document in the shard
    <source>/shard-00000.json          the shard's record; written last, so its presence means "complete"

Documents are stored as the stream uses them: `encode_documents` ids (no special tokens, EOS after each
document, BOS before it with `add_bos`), in the source's document order, cut into shards at document boundaries.

`manifest.json`: `format`, `format_version`, `tokenizer` (sha256 fingerprint of what decides the ids, vocabulary
size, EOS/BOS ids, class, name), `dtype`, `add_bos`, and per source: the source spec it was made from (metadata
`filters` included, also kept with the count of records they dropped, `filtered_out`) and its fingerprint,
`complete`, `tokens`, `documents`, and the shard records (`tokens`, `documents`, `first_document`, sha256 of both
files). Readers check the folder against the recipe before training starts (tokenizer, BOS, source
spec), the size of every shard file when it is first opened (a truncated file is named), and every id against the
vocabulary as batches are built (a corrupt file is named); `verify_prepared` re-hashes everything.

`PreparedTokens` serves windows of a source's endless token stream (epoch after epoch: offsets wrap around) by
copying from memory-mapped shard files: a handful of numpy slices per row, no per-token Python work. Pages it has
read are handed back to the kernel whenever the process has read another `RELEASE_EVERY` bytes (4 MB) from any
source, so the resident memory of a reading process does not grow with the size of the corpus.
"""

import hashlib
import json
import mmap
import weakref
from bisect import bisect_right
from pathlib import Path

import numpy as np

from ..errors import UsageValueError

FORMAT = "hf-smallllm-tokens"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TOKENS_SUFFIX = ".tokens"
DOCS_SUFFIX = ".docs"
RECORD_SUFFIX = ".json"
DOC_INDEX_DTYPE = np.dtype("<u8")
RELEASE_EVERY = 4 << 20  # bytes read by this process between handing mapped pages back (one madvise per shard)

_READERS: "weakref.WeakSet[PreparedTokens]" = weakref.WeakSet()  # readers of this process with open shards
_READ_SINCE_RELEASE = [0]


class PreparedDataError(UsageValueError):
    """A prepared folder that cannot be used as asked (wrong tokenizer, incomplete, truncated or corrupt file); the
    command line prints it as one line."""


# ---------------------------------------------------------------------- small helpers
def shard_stem(index: int) -> str:
    return f"shard-{index:05d}"


def spec_fingerprint(spec: dict) -> str:
    """sha256 of a source spec without the fields that do not change its documents (weight, prepared)."""
    canonical = {key: value for key, value in spec.items() if key not in ("weight", "prepared")}
    if not canonical.get("filters"):
        canonical.pop("filters", None)  # `filters: []` filters nothing: the same documents as no key
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def read_manifest(folder) -> dict | None:
    """The manifest of a prepared folder, or None when the folder has none."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PreparedDataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from err
    except UnicodeDecodeError as err:
        raise PreparedDataError(f"{path}: not UTF-8 text (byte {err.start}); not a manifest") from None
    except RecursionError:
        raise PreparedDataError(f"{path}: JSON nested too deeply; not a manifest") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PreparedDataError(f"{path}: not a manifest of prepared tokens (format {FORMAT!r} expected)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise PreparedDataError(f"{path}: format_version {manifest.get('format_version')!r}; this version reads "
                                f"{FORMAT_VERSION} (prepare the data again)")
    _check_manifest_fields(manifest, path)
    _check_manifest_paths(manifest, path)
    return manifest


TOKEN_DTYPES = ("uint16", "uint32")
MANIFEST_TOKENIZER_FIELDS = {"sha256": str, "vocab_size": int, "eos_token_id": int, "name_or_path": str, "class": str}


def _check_manifest_fields(manifest: dict, path: Path) -> None:
    """The fields readers use, with their types: a malformed manifest is named in one line, not a KeyError later."""
    tokenizer = manifest.get("tokenizer")
    if not isinstance(tokenizer, dict):
        raise PreparedDataError(f"{path}: 'tokenizer' must be a mapping describing the tokenizer")
    for name, kind in MANIFEST_TOKENIZER_FIELDS.items():
        value = tokenizer.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise PreparedDataError(f"{path}: tokenizer.{name} must be a {kind.__name__}, got {value!r}")
    if manifest.get("dtype") not in TOKEN_DTYPES:
        raise PreparedDataError(f"{path}: dtype {manifest.get('dtype')!r}; prepared tokens are one of {TOKEN_DTYPES}")
    if not isinstance(manifest.get("add_bos"), bool):
        raise PreparedDataError(f"{path}: add_bos must be true or false, got {manifest.get('add_bos')!r}")
    sources = manifest.get("sources")
    for name, entry in (sources.items() if isinstance(sources, dict) else ()):
        if not isinstance(entry, dict):
            continue  # named by _check_manifest_paths
        for field, kind in (("tokens", int), ("documents", int), ("complete", bool)):
            if field in entry and (not isinstance(entry[field], kind) or (kind is int and isinstance(entry[field],
                                                                                                    bool))):
                raise PreparedDataError(f"{path}: source {name!r} {field} must be a {kind.__name__}, got "
                                        f"{entry[field]!r}")
        for number, shard in enumerate(entry.get("shards") or []):
            tokens = shard.get("tokens") if isinstance(shard, dict) else None
            if isinstance(shard, dict) and "tokens" in shard and (not isinstance(tokens, int) or
                                                                 isinstance(tokens, bool) or tokens < 0):
                raise PreparedDataError(f"{path}: source {name!r} shard {number} tokens must be a count >= 0, got "
                                        f"{tokens!r}")


def _inside(folder: Path, relative, what: str, manifest_path: Path) -> None:
    """A file named by a manifest must be a relative path below its folder: a manifest is data, and data from
    elsewhere must not make training read (or `prepare --overwrite` delete) files outside the folder."""
    if not isinstance(relative, str) or not relative or Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise PreparedDataError(f"{manifest_path}: {what} {relative!r} is not a relative path inside {folder}")
    if not (folder / relative).resolve().is_relative_to(folder.resolve()):
        raise PreparedDataError(f"{manifest_path}: {what} {relative!r} leads outside {folder} (a symbolic link?)")


def _check_manifest_paths(manifest: dict, manifest_path: Path) -> None:
    from .documents import check_source_name

    folder = manifest_path.parent
    sources = manifest.get("sources")
    if not isinstance(sources, dict):
        raise PreparedDataError(f"{manifest_path}: 'sources' must be a mapping of source name to entry")
    for name, entry in sources.items():
        try:
            check_source_name(name)
        except ValueError as err:
            raise PreparedDataError(f"{manifest_path}: {err}") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("shards", []), list):
            raise PreparedDataError(f"{manifest_path}: source {name!r} must map to an entry with a list of 'shards'")
        for number, shard in enumerate(entry.get("shards", [])):
            if not isinstance(shard, dict) or "file" not in shard or "tokens" not in shard:
                raise PreparedDataError(f"{manifest_path}: source {name!r} shard {number} needs 'file' and 'tokens'")
            _inside(folder, shard["file"], f"source {name!r} shard file", manifest_path)
            if "index" in shard:
                _inside(folder, shard["index"], f"source {name!r} shard index", manifest_path)


# ---------------------------------------------------------------------- checks against a recipe
def check_manifest(manifest: dict, folder, tokenizer_info: dict, add_bos: bool) -> None:
    """Raise PreparedDataError unless the folder was prepared with this tokenizer and BOS choice."""
    stored = manifest["tokenizer"]
    if stored["sha256"] != tokenizer_info["sha256"] or stored["vocab_size"] != tokenizer_info["vocab_size"]:
        raise PreparedDataError(
            f"{folder} was prepared with another tokenizer ({stored['class']} {stored['name_or_path']!r}, "
            f"{stored['vocab_size']:,d} entries, fingerprint {stored['sha256'][:12]}) than the recipe's "
            f"({tokenizer_info['class']} {tokenizer_info['name_or_path']!r}, {tokenizer_info['vocab_size']:,d} "
            f"entries, fingerprint {tokenizer_info['sha256'][:12]}); prepare the data with the recipe's tokenizer")
    for key in ("eos_token_id", "bos_token_id"):
        if stored.get(key) != tokenizer_info.get(key):
            raise PreparedDataError(f"{folder}: prepared with {key}={stored.get(key)} but the tokenizer has "
                                    f"{tokenizer_info.get(key)}")
    if bool(manifest.get("add_bos")) != bool(add_bos):
        raise PreparedDataError(f"{folder}: prepared with add_bos={manifest.get('add_bos')} but the recipe has "
                                f"data.add_bos={add_bos}")


def source_entry(manifest: dict, folder, name: str, spec: dict | None = None) -> dict:
    """The manifest entry of source `name`, complete, and made from `spec` when the recipe gives one."""
    sources = manifest.get("sources", {})
    if name not in sources:
        raise PreparedDataError(f"{folder} has no prepared source {name!r} (it has {sorted(sources)}); run "
                                "`hf-smallllm data prepare` for it")
    entry = sources[name]
    if not entry.get("complete"):
        raise PreparedDataError(f"{folder}: source {name!r} is only partly prepared; run `hf-smallllm data prepare` "
                                "again to finish it")
    prepared_filters = (entry.get("spec") or {}).get("filters", [])
    if spec is not None and (spec.get("filters") or []) != prepared_filters:
        raise PreparedDataError(f"{folder}: source {name!r} was prepared with filters {prepared_filters} but the "
                                f"recipe asks for {spec.get('filters') or []}; prepare it again (--overwrite)")
    given = spec is not None and (spec.get("paths") or spec.get("dataset") is not None)
    if given and entry.get("spec_sha256") != spec_fingerprint(spec):
        raise PreparedDataError(f"{folder}: source {name!r} was prepared from {entry.get('spec')} but the recipe "
                                    f"now says {_plain(spec)}; prepare it again (--overwrite)")
    return entry


def _plain(spec: dict) -> dict:
    return {key: value for key, value in spec.items() if key not in ("weight", "prepared")}


# ---------------------------------------------------------------------- the reader
class _Shard:
    __slots__ = ("array", "mapping", "path", "tokens")

    def __init__(self, path: Path, tokens: int):
        self.path, self.tokens, self.array, self.mapping = path, tokens, None, None


class PreparedTokens:
    """Windows of one prepared source's token stream, read from its memory-mapped shards."""

    holds_tokens = False  # nothing to release between steps

    def __init__(self, folder, name: str, manifest: dict):
        self.folder = Path(folder)
        self.name = name
        entry = manifest["sources"][name]
        self.dtype = np.dtype(manifest["dtype"]).newbyteorder("<")
        self.vocab_size = manifest["tokenizer"]["vocab_size"]
        self.total_tokens = int(entry["tokens"])
        if self.total_tokens <= 0:
            raise PreparedDataError(f"{self.folder}: source {name!r} has no tokens")
        self._shards = [_Shard(self.folder / shard["file"], int(shard["tokens"])) for shard in entry["shards"]]
        self._starts = []  # first stream offset (within an epoch) of every shard
        offset = 0
        for shard in self._shards:
            self._starts.append(offset)
            offset += shard.tokens
        if offset != self.total_tokens:
            raise PreparedDataError(f"{self.folder / MANIFEST_NAME}: source {name!r} lists {offset} tokens in its "
                                    f"shards but {self.total_tokens} in total")
        self._entry = entry
        self._open: list[_Shard] = []

    def _array(self, index: int) -> np.ndarray:
        shard = self._shards[index]
        if shard.array is None:
            expected = shard.tokens * self.dtype.itemsize
            try:
                size = shard.path.stat().st_size
            except FileNotFoundError:
                raise PreparedDataError(
                    f"{shard.path}: shard file missing (listed in {self.folder / MANIFEST_NAME})") from None
            if size != expected:
                raise PreparedDataError(f"{shard.path}: {'truncated' if size < expected else 'corrupt'} shard, "
                                        f"{size:,d} bytes where the manifest says {shard.tokens:,d} tokens x "
                                        f"{self.dtype.itemsize} = {expected:,d}")
            with open(shard.path, "rb") as handle:
                shard.mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            shard.array = np.frombuffer(shard.mapping, dtype=self.dtype)
            self._open.append(shard)
            _READERS.add(self)
        return shard.array

    def _release(self) -> None:
        """Drop the pages read so far from this process (they stay in the page cache for the next reader)."""
        if hasattr(mmap, "MADV_DONTNEED"):
            for shard in self._open:
                shard.mapping.madvise(mmap.MADV_DONTNEED)

    def read_into(self, out: np.ndarray, start: int) -> None:
        """Fill `out` with tokens `[start, start + len(out))` of the endless stream (offsets wrap every epoch)."""
        position = start % self.total_tokens
        filled, wanted = 0, len(out)
        while filled < wanted:
            index = bisect_right(self._starts, position) - 1
            array = self._array(index)
            local = position - self._starts[index]
            take = min(wanted - filled, self._shards[index].tokens - local)
            out[filled:filled + take] = array[local:local + take]
            filled += take
            position = (position + take) % self.total_tokens
        _READ_SINCE_RELEASE[0] += wanted * self.dtype.itemsize
        if _READ_SINCE_RELEASE[0] >= RELEASE_EVERY:
            _READ_SINCE_RELEASE[0] = 0
            for reader in list(_READERS):
                reader._release()

    def file_of(self, offset: int) -> Path:
        """The shard file that holds stream token `offset`."""
        return self._shards[bisect_right(self._starts, offset % self.total_tokens) - 1].path

    def release_before(self, offset: int) -> None:
        pass  # nothing is held beyond the pages `read_into` hands back

    def state_dict(self) -> dict:
        return {}  # the position is the stream's offset; nothing else

    def load_state_dict(self, state: dict) -> None:
        pass


def open_prepared(folder, name: str, tokenizer_info: dict, add_bos: bool, spec: dict | None = None,
                  manifest: dict | None = None) -> PreparedTokens:
    """A reader for source `name` of a prepared folder, after checking the folder against the recipe."""
    folder = Path(folder)
    manifest = manifest if manifest is not None else read_manifest(folder)
    if manifest is None:
        raise PreparedDataError(f"{folder}: no {MANIFEST_NAME}; prepare the data first with `hf-smallllm data "
                                "prepare --recipe RECIPE --output FOLDER`")
    check_manifest(manifest, folder, tokenizer_info, add_bos)
    source_entry(manifest, folder, name, spec)
    return PreparedTokens(folder, name, manifest)


def verify_prepared(folder) -> dict:
    """Re-hash every shard file and check every document index; raise PreparedDataError naming the first bad file.
    Returns {source: tokens}."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise PreparedDataError(f"{folder}: no {MANIFEST_NAME}")
    dtype = np.dtype(manifest["dtype"]).newbyteorder("<")
    eos, vocab = manifest["tokenizer"]["eos_token_id"], manifest["tokenizer"]["vocab_size"]
    counts = {}
    for name, entry in manifest["sources"].items():
        if not entry.get("complete"):
            raise PreparedDataError(f"{folder}: source {name!r} is only partly prepared")
        for shard in entry["shards"]:
            tokens_path, docs_path = folder / shard["file"], folder / shard["index"]
            for path, key in ((tokens_path, "sha256"), (docs_path, "index_sha256")):
                if not path.is_file():
                    raise PreparedDataError(f"{path}: shard file missing")
                if _sha256_file(path) != shard[key]:
                    raise PreparedDataError(f"{path}: corrupt shard (sha256 differs from the manifest)")
            tokens = np.fromfile(tokens_path, dtype=dtype)
            ends = np.fromfile(docs_path, dtype=DOC_INDEX_DTYPE)
            if len(tokens) != shard["tokens"] or len(ends) != shard["documents"]:
                raise PreparedDataError(f"{tokens_path}: {len(tokens)} tokens / {len(ends)} documents where the "
                                        f"manifest says {shard['tokens']} / {shard['documents']}")
            if len(ends) and (ends[-1] != len(tokens) or np.any(np.diff(ends.astype(np.int64)) <= 0)
                              or np.any(tokens[ends.astype(np.int64) - 1] != eos)):
                raise PreparedDataError(f"{docs_path}: document index does not match the tokens (every document "
                                        "must end with EOS)")
            if len(tokens) and int(tokens.max()) >= vocab:
                raise PreparedDataError(f"{tokens_path}: corrupt shard, token id {int(tokens.max())} >= vocabulary "
                                        f"size {vocab}")
        counts[name] = entry["tokens"]
    return counts


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST_NAME", "PreparedDataError", "PreparedTokens", "check_manifest",
           "open_prepared", "read_manifest", "source_entry", "spec_fingerprint", "verify_prepared"]
