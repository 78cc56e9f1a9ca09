"""Checkpoints of a training run: complete or absent, never half-written.

A checkpoint is `output_dir/checkpoint-<step>/`: a `save_pretrained` folder (config, safetensors weights,
generation config, tokenizer) plus what resuming needs: `trainer_state.json` (transformers' TrainerState: global
step, tokens seen, log history), `optimizer.pt`, `scheduler.pt`, `rng_state*.pth`, and `data_state.json` (where the
data stream stands). Everything is first written into `output_dir/.tmp-checkpoint-<step>/` and renamed into place
only when complete, so a run killed mid-save leaves the previous checkpoint as the latest; the leftover temporary
folder is ignored and removed by the next save. The names and the atomic rename live in `hf_smallllm.runfiles`;
this module adds the training-side policy (resume or refuse, rotation).
"""

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from ..runfiles import (
    CHECKPOINT_PREFIX,
    TEMPORARY_PREFIX,
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    replace_folder,
    temporary_checkpoint_dir,
)


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
            if path.name.startswith(TEMPORARY_PREFIX + CHECKPOINT_PREFIX):
                shutil.rmtree(path, ignore_errors=True)


@contextmanager
def atomic_checkpoint(output_dir, step: int):
    """Yields a temporary folder to fill; on success it becomes `checkpoint-<step>` (replacing an older one of the
    same step), on an exception it is removed and nothing changes."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output_dir)
    temporary = temporary_checkpoint_dir(output_dir, step)
    temporary.mkdir()
    try:
        yield temporary
        replace_folder(temporary, checkpoint_dir(output_dir, step))
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def rotate_checkpoints(output_dir, keep: int | None) -> None:
    """Delete the oldest checkpoints beyond `keep` (None keeps all)."""
    if keep is None:
        return
    checkpoints = list_checkpoints(output_dir)
    for _, path in checkpoints[: max(0, len(checkpoints) - keep)]:
        shutil.rmtree(path, ignore_errors=True)


__all__ = ["atomic_checkpoint", "remove_stale_temporaries", "resolve_resume", "rotate_checkpoints"]
