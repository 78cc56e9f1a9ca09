"""The files a run leaves behind, and how they are written: the one bottom layer that `train`, `eval`, `hub`, `sft`
and the rest share (standard library only, so any package may import it without pulling anything else in).

Three things live here:

- **Atomic writes.** A file or folder is written under a temporary name in the same folder and renamed over the
  target only when complete (`os.replace` is atomic within a filesystem), so a crash or an exception leaves either
  the old content or the new one, never half of either. `atomic_path` / `write_json_atomic` / `write_text_atomic` /
  `write_bytes_atomic` for files, `atomic_folder` for folders (`save_pretrained` outputs, conversions).
- **Checkpoint names.** A training run's `output_dir` holds `checkpoint-<step>/` folders; one is complete when its
  `trainer_state.json` exists (it is written last). `.tmp-checkpoint-<step>/` is a checkpoint being written.
- **The metrics file.** `output_dir/metrics.jsonl`: one JSON object per line, appended as training goes. Every
  record has `step` (optimizer steps done) and usually `tokens` (training tokens seen so far); the rest are metric
  names, e.g. `loss`, `lr`, `tokens_per_second`, or `eval/<domain>/loss` and `eval/<domain>/ppl` from per-domain
  validation. Training, evaluation callbacks, plots and model cards all read and write this one format.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# --- checkpoint names --------------------------------------------------------------------------------------------

CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TEMPORARY_PREFIX = ".tmp-"
TRAINER_STATE_NAME = "trainer_state.json"  # transformers' TrainerState; written last, so it marks a complete one
METRICS_NAME = "metrics.jsonl"
RECIPE_NAME = "recipe.yaml"


def checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    """`output_dir/checkpoint-<step>`."""
    return Path(output_dir) / f"{CHECKPOINT_PREFIX}{step}"


def temporary_checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    """`output_dir/.tmp-checkpoint-<step>`: where checkpoint `step` is written before it is renamed into place."""
    return Path(output_dir) / f"{TEMPORARY_PREFIX}{CHECKPOINT_PREFIX}{step}"


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step in a `checkpoint-<step>` folder name, None for any other name."""
    match = CHECKPOINT_PATTERN.match(Path(path).name)
    return int(match.group(1)) if match else None


def is_checkpoint_name(name: str) -> bool:
    return CHECKPOINT_PATTERN.match(name) is not None


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints (those with a `trainer_state.json`) as (step, path), oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        step = checkpoint_step(path)
        if step is not None and path.is_dir() and (path / TRAINER_STATE_NAME).exists():
            found.append((step, path))
    return sorted(found)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run, None when there is none."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def run_dir_of(folder: str | os.PathLike) -> Path:
    """The run folder of a checkpoint folder (its parent), or `folder` itself when it is not a checkpoint."""
    folder = Path(folder)
    return folder.parent if is_checkpoint_name(folder.name) else folder


# --- atomic writes -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path next to `path` (same suffix, so writers that infer a format from it still work);
    renames it to `path` when the block succeeds and removes it when the block raises. Parent folders are created.
    `path` may be a symlink target's name: the link itself is replaced, never written through."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    try:
        # mkstemp creates 0600 whatever the umask; the file gets the mode an open() would have given it, so a
        # shared cluster's group can read prepared data and checkpoints as the user's umask intends
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask (read by setting and restoring it: there is no other portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: Any, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """`data` as UTF-8 JSON (non-ASCII kept as is) at `path`, written atomically, ending with a newline."""
    return write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=indent, sort_keys=sort_keys) + "\n")


@contextlib.contextmanager
def atomic_folder(output: str | os.PathLike, staging: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yields an empty staging folder next to `output`; when the block succeeds the staging folder replaces
    `output` (an existing `output` is moved aside first and deleted only once the new one is in place), when it
    raises the staging folder is removed and `output` is untouched. `staging` names the staging folder (it is
    cleared first); by default it is `.<name>.partial-<random>` next to `output`."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if staging is None:
        staging = output.parent / f".{output.name}.partial-{uuid.uuid4().hex[:8]}"
    staging = Path(staging)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
        replace_folder(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_folder(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename the complete folder `source` to `target`; an existing `target` is moved aside first and removed only
    after the rename, so at every moment one complete version exists under a known name."""
    source, target = Path(source), Path(target)
    if target.exists():
        previous = target.parent / f".{target.name}.replaced-{uuid.uuid4().hex[:8]}"
        os.replace(target, previous)
        os.replace(source, target)
        shutil.rmtree(previous, ignore_errors=True)
    else:
        os.replace(source, target)
    fsync_dir(target.parent)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename is durable only once its folder is synced); best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- one writer per folder ---------------------------------------------------------------------------------------

LOCK_NAME = ".lock"


class FolderBusyError(RuntimeError):
    """Another process holds the folder's lock (a second `pretrain --resume` or `data prepare` on the same folder)."""


class FolderLock:
    """An exclusive advisory lock on `folder/.lock` (flock: released by the kernel when the process dies, so a killed
    run never leaves a stale lock). The file records who holds it, for the message a second writer gets."""

    def __init__(self, folder: str | os.PathLike, purpose: str):
        import fcntl
        import socket

        self.path = Path(folder) / LOCK_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.path.read_text(encoding="utf-8", errors="replace").strip() or "another process"
            os.close(self._fd)
            raise FolderBusyError(f"{self.path.parent} is in use by {holder}; wait for it to finish (or stop it) "
                                  f"before {purpose} there") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{purpose} (pid {os.getpid()} on {socket.gethostname()})\n".encode())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# --- the metrics file ----------------------------------------------------------------------------------------------


def append_metrics(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one record; `step` is required. The line is written in one call, flushed and fsynced, so a crash
    never leaves half a line that later readers would trip over."""
    if "step" not in record:
        raise ValueError(f"a metrics record needs a 'step' field, got keys {sorted(record)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def truncate_metrics(path: str | os.PathLike, step: int) -> int:
    """Keep only the records of steps <= `step` (rewritten atomically): a run resumed from checkpoint `step` logs
    the later steps again, and the file must read like an uninterrupted run's. Returns how many were dropped."""
    path = Path(path)
    records = read_metrics(path)
    kept = [r for r in records if not isinstance(r.get("step"), int) or r["step"] <= step]
    if len(kept) != len(records) or (path.exists() and len(records) != _line_count(path)):
        write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in kept))
    return len(records) - len(kept)


def _line_count(path: Path) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records in file order; a truncated last line (a run killed mid-write) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


__all__ = [
    "CHECKPOINT_PATTERN",
    "LOCK_NAME",
    "FolderBusyError",
    "FolderLock",
    "CHECKPOINT_PREFIX",
    "METRICS_NAME",
    "RECIPE_NAME",
    "TEMPORARY_PREFIX",
    "TRAINER_STATE_NAME",
    "append_metrics",
    "atomic_folder",
    "atomic_path",
    "checkpoint_dir",
    "checkpoint_step",
    "current_umask",
    "fsync_dir",
    "is_checkpoint_name",
    "latest_checkpoint",
    "list_checkpoints",
    "read_metrics",
    "replace_folder",
    "run_dir_of",
    "temporary_checkpoint_dir",
    "truncate_metrics",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]
