"""Checkpoints of a training run: complete or absent, never half-written.

A checkpoint is `output_dir/checkpoint-<step>/`: a `save_pretrained` folder (config, safetensors weights,
generation config, tokenizer) plus what resuming needs: `trainer_state.json` (transformers' TrainerState: global
step, tokens seen, log history), `optimizer.pt`, `scheduler.pt`, `rng_state*.pth`, and `data_state.json` (where the
data stream stands). Everything is first written into `output_dir/.tmp-checkpoint-<step>/` and renamed into place
only when complete, so a run killed mid-save leaves the previous checkpoint as the latest; the leftover temporary
folder is ignored and removed by the next save.
"""

import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TEMPORARY_PREFIX = ".tmp-"
DATA_STATE_NAME = "data_state.json"
TRAINER_STATE_NAME = "trainer_state.json"


def checkpoint_dir(output_dir, step: int) -> Path:
    return Path(output_dir) / f"checkpoint-{step}"


def list_checkpoints(output_dir) -> list[tuple[int, Path]]:
    """Complete checkpoints as (step, path), oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and path.is_dir() and (path / TRAINER_STATE_NAME).exists():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def resolve_resume(output_dir, resume) -> Path | None:
    """The checkpoint a run starts from: None for a fresh run (refused when `output_dir` already holds checkpoints,
    so a run is never silently overwritten), the newest complete checkpoint for `resume=True`, or the given path."""
    from .recipe import RecipeError

    output_dir = Path(output_dir)
    if not resume:
        if latest_checkpoint(output_dir) is not None:
            raise RecipeError(f"{output_dir} already holds checkpoints; pass --resume to continue, or choose another "
                              "training.output_dir")
        return None
    resume_from = Path(resume) if isinstance(resume, (str, os.PathLike)) else latest_checkpoint(output_dir)
    if resume_from is None or not resume_from.exists():
        raise RecipeError(f"--resume: no complete checkpoint in {output_dir}")
    return resume_from


def remove_stale_temporaries(output_dir) -> None:
    output_dir = Path(output_dir)
    if output_dir.is_dir():
        for path in output_dir.iterdir():
            if path.name.startswith(TEMPORARY_PREFIX + "checkpoint-"):
                shutil.rmtree(path, ignore_errors=True)


@contextmanager
def atomic_checkpoint(output_dir, step: int):
    """Yields a temporary folder to fill; on success it becomes `checkpoint-<step>` (replacing an older one of the
    same step), on an exception it is removed and nothing changes."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output_dir)
    temporary = output_dir / f"{TEMPORARY_PREFIX}checkpoint-{step}"
    temporary.mkdir()
    try:
        yield temporary
        final = checkpoint_dir(output_dir, step)
        if final.exists():
            shutil.rmtree(final)
        os.replace(temporary, final)
        _fsync_dir(output_dir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _fsync_dir(path: Path) -> None:
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


def rotate_checkpoints(output_dir, keep: int | None) -> None:
    """Delete the oldest checkpoints beyond `keep` (None keeps all)."""
    if keep is None:
        return
    checkpoints = list_checkpoints(output_dir)
    for _, path in checkpoints[: max(0, len(checkpoints) - keep)]:
        shutil.rmtree(path, ignore_errors=True)


def write_json(path, data) -> None:
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(temporary, path)


def read_data_state(checkpoint) -> dict | None:
    path = Path(checkpoint) / DATA_STATE_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


__all__ = [
    "DATA_STATE_NAME",
    "TRAINER_STATE_NAME",
    "atomic_checkpoint",
    "checkpoint_dir",
    "latest_checkpoint",
    "list_checkpoints",
    "read_data_state",
    "remove_stale_temporaries",
    "resolve_resume",
    "rotate_checkpoints",
    "write_json",
]
