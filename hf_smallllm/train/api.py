"""`run_pretraining`: one call from a recipe to a trained, checkpointed model (used by the CLI, the training script
and the demo)."""

from dataclasses import dataclass
from pathlib import Path

from ..families import family_of
from ..runfiles import METRICS_NAME, latest_checkpoint
from .engine import train
from .recipe import Recipe, load_recipe
from .run import build_run


@dataclass
class PretrainResult:
    output_dir: Path
    final_checkpoint: Path | None
    metrics_path: Path
    global_step: int
    tokens_seen: int
    family: str
    recipe: Recipe
    parallelism: str = "single"  # single | ddp | fsdp2 | zero1 | zero2 | zero3 (what was in effect)
    world_size: int = 1


def run_pretraining(recipe, overrides=None, resume: bool | str = False,
                    extra_callbacks: list | None = None) -> PretrainResult:
    """Train from `recipe` (a path, a shipped recipe name, a mapping or a Recipe) with `overrides`
    (`["training.max_steps=20", ...]` or a dotted dict). `resume=True` continues from the newest complete checkpoint
    in the output folder (an error if there is none); a path resumes from that checkpoint. Runs as is on one process
    and under `torchrun` / `accelerate launch` on many (DDP, FSDP2, DeepSpeed ZeRO: see docs/pretraining.md)."""
    recipe = load_recipe(recipe, overrides)
    run = build_run(recipe, resume=resume, extra_callbacks=extra_callbacks)
    try:
        engine = train(run)
    finally:
        if run.lock is not None:
            run.lock.release()  # the folder is free for the next run (or a --resume) in this process too
    return PretrainResult(output_dir=run.output_dir, final_checkpoint=latest_checkpoint(run.output_dir),
                          metrics_path=run.output_dir / METRICS_NAME, global_step=engine.state.global_step,
                          tokens_seen=engine.state.num_input_tokens_seen, family=family_of(run.unwrapped.config),
                          recipe=recipe, parallelism=run.plan.parallelism, world_size=run.plan.world_size)


__all__ = ["PretrainResult", "run_pretraining"]
