"""`hf-smallllm data prepare`: tokenize a recipe's sources once into token shards (layout in `shards.py`).

The main process reads each source's documents in order (`DocumentSource`: files, globs, JSONL/Parquet/text,
`datasets` datasets including streaming ones) and cuts them into units of about `shard_chars` characters at
document boundaries; worker processes tokenize the units (`encode_documents`, one thread each) and write one shard
per unit. At most two units per worker are in flight, so memory stays bounded whatever the corpus size.

Resuming: a shard is written as temporary files, renamed, and only then recorded by its `shard-N.json`, written last and
atomically; a shard without its record is not complete and is written again. The units are a deterministic function of
the documents and `shard_chars` (kept per source in the manifest), so a re-run after a kill reads the documents again,
skips every unit whose record is present, and tokenizes only the rest. A source is marked `complete` in the manifest
when all its shards are. A folder that holds another tokenizer's tokens, or a source of the same name made from a
different spec, is refused unless `overwrite` is given.
"""

import hashlib
import os
import shutil
from collections import deque
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from ..errors import UsageValueError
from ..runfiles import FolderBusyError, FolderLock, atomic_path, write_bytes_atomic, write_json_atomic
from .documents import DocumentSource, check_source_name
from .shards import (
    DOC_INDEX_DTYPE,
    DOCS_SUFFIX,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    RECORD_SUFFIX,
    TOKENS_SUFFIX,
    PreparedDataError,
    read_manifest,
    shard_stem,
    spec_fingerprint,
)
from .tokens import check_special_tokens, encode_documents, token_dtype, tokenizer_identity

DEFAULT_SHARD_CHARS = 32_000_000  # about 8M tokens (16 MB as uint16) per shard for English text


@dataclass
class _Unit:
    source: str
    index: int
    first_document: int
    texts: list[str] | None  # None: already complete on disk


# ---------------------------------------------------------------------- worker side
_WORKER: dict = {}


def _init_worker(tokenizer, add_bos: bool, dtype: str, folder: str, tokenize_batch: int) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker process: workers are the parallelism
    _WORKER.update(tokenizer=tokenizer, add_bos=add_bos, dtype=np.dtype(dtype).newbyteorder("<"), folder=Path(folder),
                   tokenize_batch=tokenize_batch)


def _write_unit(unit: _Unit) -> dict:
    """Tokenize one unit into `<source>/shard-N.{tokens,docs}` and record it; returns the record."""
    tokenizer, dtype = _WORKER["tokenizer"], _WORKER["dtype"]
    folder = _WORKER["folder"] / unit.source
    stem = shard_stem(unit.index)
    digests = {suffix: hashlib.sha256() for suffix in (TOKENS_SUFFIX, DOCS_SUFFIX)}
    tokens = 0
    ends = []
    # each file is written under a temporary name and renamed when complete (runfiles.atomic_path); the record,
    # written after both, is what makes the shard count as done
    with atomic_path(folder / f"{stem}{TOKENS_SUFFIX}") as temporary, open(temporary, "wb") as token_file:
        batch = _WORKER["tokenize_batch"]
        for first in range(0, len(unit.texts), batch):
            documents = encode_documents(tokenizer, unit.texts[first:first + batch], _WORKER["add_bos"])
            lengths = np.fromiter((len(ids) for ids in documents), dtype=np.int64, count=len(documents))
            flat = np.fromiter(chain.from_iterable(documents), dtype=np.int64, count=int(lengths.sum()))
            if len(flat) and (flat.min() < 0 or flat.max() > np.iinfo(dtype).max):
                raise PreparedDataError(f"source {unit.source!r}: token id {int(flat.max())} does not fit {dtype}")
            data = flat.astype(dtype).tobytes()
            token_file.write(data)
            digests[TOKENS_SUFFIX].update(data)
            ends.append(tokens + np.cumsum(lengths))
            tokens += int(lengths.sum())
        token_file.flush()
        os.fsync(token_file.fileno())
    index = (np.concatenate(ends) if ends else np.zeros(0, np.int64)).astype(DOC_INDEX_DTYPE).tobytes()
    digests[DOCS_SUFFIX].update(index)
    write_bytes_atomic(folder / f"{stem}{DOCS_SUFFIX}", index)
    record = {"file": f"{unit.source}/{stem}{TOKENS_SUFFIX}", "index": f"{unit.source}/{stem}{DOCS_SUFFIX}",
              "tokens": tokens, "documents": len(unit.texts), "first_document": unit.first_document,
              "sha256": digests[TOKENS_SUFFIX].hexdigest(), "index_sha256": digests[DOCS_SUFFIX].hexdigest()}
    write_json_atomic(folder / f"{stem}{RECORD_SUFFIX}", record)  # the shard is complete from here on
    return record


# ---------------------------------------------------------------------- main side
def _units(source: DocumentSource, folder: Path, shard_chars: int):
    """The source's documents cut into units at document boundaries; units already on disk come without texts."""
    texts, chars, first, index = [], 0, 0, 0

    def unit():
        record = _read_record(folder / source.name / f"{shard_stem(index)}{RECORD_SUFFIX}")
        done = record is not None and record["first_document"] == first and record["documents"] == len(texts)
        return _Unit(source.name, index, first, None if done else texts)

    for number, text in enumerate(source.iter_documents()):
        texts.append(text)
        chars += len(text)
        if chars >= shard_chars:
            yield unit()
            texts, chars, first, index = [], 0, number + 1, index + 1
    if texts or index == 0:
        if not texts:
            raise PreparedDataError(f"source {source.name!r} has no documents")
        yield unit()


def _read_record(path: Path) -> dict | None:
    import json

    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None  # a record is written atomically, so this is a foreign file: redo the shard


def _remove_source_folder(folder: Path, name: str) -> None:
    """Delete the shards of source `name`: only ever a direct sub-folder of `folder` (names are checked when the
    manifest is read and when sources are built; this is the last guard before a recursive delete)."""
    target = folder / check_source_name(name)
    if target.is_symlink() or target.resolve().parent != folder.resolve():
        raise PreparedDataError(f"{folder}: refusing to delete {target}, which is not a folder directly inside it")
    shutil.rmtree(target, ignore_errors=True)


def _prepare_folder(folder: Path, identity: dict, dtype: np.dtype, add_bos: bool, specs: list[dict],
                    shard_chars: int, overwrite: bool) -> dict:
    """The manifest to continue from: an existing compatible one, or a fresh one (refusing foreign content)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(folder)
    fresh = {"format": FORMAT, "format_version": FORMAT_VERSION, "tokenizer": identity, "dtype": dtype.name,
             "add_bos": add_bos, "sources": {}}
    if manifest is None:
        ours = {MANIFEST_NAME} | {spec["name"] for spec in specs}
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in ours and not p.name.startswith("."))
        if foreign:
            raise PreparedDataError(f"{folder} is not empty and holds no prepared tokens ({', '.join(foreign[:5])}); "
                                    "choose an empty or new folder")
        return fresh
    conflicts = []
    if manifest["tokenizer"]["sha256"] != identity["sha256"]:
        conflicts.append(f"tokenizer {manifest['tokenizer']['name_or_path']!r} "
                         f"({manifest['tokenizer']['sha256'][:12]}), not {identity['name_or_path']!r} "
                         f"({identity['sha256'][:12]})")
    if bool(manifest.get("add_bos")) != add_bos:
        conflicts.append(f"add_bos={manifest.get('add_bos')}")
    if conflicts:
        if not overwrite:
            raise PreparedDataError(f"{folder} holds tokens prepared differently ({'; '.join(conflicts)}); pass "
                                    "--overwrite to replace them or choose another folder")
        for name in manifest["sources"]:
            _remove_source_folder(folder, name)
        (folder / MANIFEST_NAME).unlink()
        return fresh
    for spec in specs:
        entry = manifest["sources"].get(spec["name"])
        if entry is not None and not entry.get("complete") and entry.get("shard_chars") != shard_chars:
            _remove_source_folder(folder, spec["name"])  # its units differ: start the source again
            del manifest["sources"][spec["name"]]
            continue
        if entry is not None and entry.get("spec_sha256") != spec_fingerprint(spec):
            if not overwrite:
                raise PreparedDataError(f"{folder}: source {spec['name']!r} was prepared from {entry.get('spec')}, "
                                        f"not from this recipe's spec; pass --overwrite to replace it")
            _remove_source_folder(folder, spec["name"])
            del manifest["sources"][spec["name"]]
    return manifest


def prepare_sources(specs: list[dict], tokenizer, output, *, add_bos: bool = False, workers: int | None = None,
                    shard_chars: int = DEFAULT_SHARD_CHARS, overwrite: bool = False, progress: bool = True,
                    tokenize_batch: int = 256) -> dict:
    """Tokenize every source spec (DocumentSource fields) into `output`; returns the manifest.

    `workers`: tokenizing processes (default: the CPU count; 0 tokenizes in this process). One preparation at a
    time per folder: a second one is refused in one line while the first runs (`runfiles.FolderLock`)."""
    check_special_tokens(tokenizer, add_bos)
    if shard_chars < 1:
        raise UsageValueError(f"shard_chars={shard_chars} must be positive")
    if Path(output).exists() and not Path(output).is_dir():
        raise PreparedDataError(f"{output} is a file; the prepared data goes into a folder (name a new or empty one)")
    try:
        lock = FolderLock(output, "preparing data")
    except FolderBusyError as err:
        raise PreparedDataError(str(err)) from None
    with lock:
        return _prepare_sources(specs, tokenizer, Path(output), add_bos=add_bos, workers=workers,
                                shard_chars=shard_chars, overwrite=overwrite, progress=progress,
                                tokenize_batch=tokenize_batch)


def _prepare_sources(specs, tokenizer, folder: Path, *, add_bos, workers, shard_chars, overwrite, progress,
                     tokenize_batch) -> dict:
    identity = tokenizer_identity(tokenizer)
    dtype = token_dtype(identity["vocab_size"])
    sources = []
    for spec in specs:
        plain = {key: value for key, value in spec.items() if key not in ("weight", "prepared")}
        sources.append((plain, DocumentSource.from_dict(plain)))
    manifest = _prepare_folder(folder, identity, dtype, add_bos, [plain for plain, _ in sources], shard_chars,
                               overwrite)
    todo = [(plain, source) for plain, source in sources
            if not manifest["sources"].get(source.name, {}).get("complete")]
    for plain, source in todo:
        # the filters are part of the spec (and its fingerprint); they are also kept on their own, with the count of
        # records they dropped, so a recipe naming other filters is refused with both in one line
        manifest["sources"][source.name] = {"spec": plain, "spec_sha256": spec_fingerprint(plain), "complete": False,
                                            "shard_chars": shard_chars, "tokens": 0, "documents": 0, "shards": [],
                                            "filters": plain.get("filters", []), "filtered_out": 0}
        (folder / source.name).mkdir(exist_ok=True)
        for stale in (folder / source.name).glob(".shard-*"):  # temporary files of a killed run
            stale.unlink()
    write_json_atomic(folder / MANIFEST_NAME, manifest)
    if not todo:
        return manifest

    if workers is None:
        workers = os.cpu_count() or 1
    bar = _progress(progress)
    pool = None
    init = (tokenizer, add_bos, dtype.name, str(folder), tokenize_batch)
    try:
        if workers > 0:
            import multiprocessing

            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            previous = os.environ.get("TOKENIZERS_PARALLELISM")
            os.environ["TOKENIZERS_PARALLELISM"] = "false"  # set before forking: no warning, no thread pools
            try:
                pool = multiprocessing.get_context(method).Pool(workers, _init_worker, init)
            finally:
                if previous is None:
                    os.environ.pop("TOKENIZERS_PARALLELISM", None)
                else:
                    os.environ["TOKENIZERS_PARALLELISM"] = previous
        else:
            _init_worker(*init)
        # Units of every source go through one pipeline, so workers never wait at a source's end; a source's
        # manifest entry is completed once all its units are read and written.
        records = {source.name: [] for _plain, source in todo}
        by_name = {source.name: source for _plain, source in todo}
        outstanding = dict.fromkeys(records, 0)
        read = set()

        def finish(name: str) -> None:
            shards = sorted(records[name], key=lambda record: record["first_document"])
            manifest["sources"][name].update(shards=shards, tokens=sum(r["tokens"] for r in shards),
                                             documents=sum(r["documents"] for r in shards), complete=True,
                                             filtered_out=by_name[name].filtered_out)
            write_json_atomic(folder / MANIFEST_NAME, manifest)

        def collect(name: str, record: dict, written: bool) -> None:
            records[name].append(record)
            bar.update(record["tokens"])
            outstanding[name] -= written
            if name in read and not outstanding[name]:
                finish(name)

        pending: deque = deque()
        for _plain, source in todo:
            for unit in _units(source, folder, shard_chars):
                if unit.texts is None:
                    collect(source.name, _read_record(folder / source.name / f"{shard_stem(unit.index)}"
                                                                           f"{RECORD_SUFFIX}"), False)
                elif pool is None:
                    collect(source.name, _write_unit(unit), False)
                else:
                    pending.append((source.name, pool.apply_async(_write_unit, (unit,))))
                    outstanding[source.name] += 1
                    if len(pending) >= 2 * workers:  # bounded memory: at most two units per worker in flight
                        name, result = pending.popleft()
                        collect(name, result.get(), True)
            read.add(source.name)
            if not outstanding[source.name]:
                finish(source.name)
        while pending:
            name, result = pending.popleft()
            collect(name, result.get(), True)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        bar.close()
    return manifest


def _progress(enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(desc="tokenizing", unit="tok", unit_scale=True, disable=not enabled, smoothing=0.1)


__all__ = ["DEFAULT_SHARD_CHARS", "prepare_sources"]
