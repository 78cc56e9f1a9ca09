"""`run_pretraining`: one call from a recipe to a trained, checkpointed model (used by the CLI, the training script
and the demo)."""

import logging
from dataclasses import dataclass
from pathlib import Path

from ..families import family_of
from ..runfiles import METRICS_NAME, RECIPE_NAME, latest_checkpoint, truncate_metrics
from .build import build_callbacks, build_model, load_tokenizer
from .callbacks import RunLogger
from .checkpoint import resolve_resume
from .recipe import Recipe, load_recipe

logger = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    output_dir: Path
    final_checkpoint: Path | None
    metrics_path: Path
    global_step: int
    tokens_seen: int
    family: str
    recipe: Recipe


def run_pretraining(recipe, overrides=None, resume: bool | str = False, entry: str | None = None,
                    extra_callbacks: list | None = None) -> PretrainResult:
    """Train from `recipe` (a path, a shipped recipe name, a mapping or a Recipe) with `overrides`
    (`["training.max_steps=20", ...]` or a dotted dict). `resume=True` continues from the newest complete checkpoint
    in the output folder (an error if there is none); a path resumes from that checkpoint. `entry` picks
    "trainer" or "accelerate" (default: the recipe's `training.entry`)."""
    overrides = list(overrides or []) if not isinstance(overrides, dict) else dict(overrides)
    if entry is not None:
        if isinstance(overrides, dict):
            overrides["training.entry"] = entry
        else:
            overrides.append(f"training.entry={entry}")
    recipe = load_recipe(recipe, overrides)
    output_dir = Path(recipe.training.output_dir)
    resume_from = resolve_resume(output_dir, resume)

    from transformers import set_seed

    set_seed(recipe.training.seed)  # the initial weights depend on it, whichever entry point trains them
    tokenizer = load_tokenizer(recipe)
    model = build_model(recipe, tokenizer)
    is_main = _is_main_process()
    callbacks = [RunLogger(output_dir / METRICS_NAME, recipe.training.progress_bar, is_main)]
    callbacks += build_callbacks(recipe, model, tokenizer, is_main)
    callbacks += list(extra_callbacks or [])
    output_dir.mkdir(parents=True, exist_ok=True)
    if is_main and resume_from is not None:
        # the steps after the checkpoint are trained (and logged) again: drop their old records
        truncate_metrics(output_dir / METRICS_NAME, _checkpoint_step(resume_from))
    if is_main:
        import yaml

        (output_dir / RECIPE_NAME).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")
    if recipe.training.entry == "trainer":
        from .trainer_entry import train_with_trainer

        trainer = train_with_trainer(recipe, model, tokenizer, callbacks, resume_from)
    else:
        from .accelerate_loop import train_with_accelerate

        trainer = train_with_accelerate(recipe, model, tokenizer, callbacks, resume_from)
    return PretrainResult(output_dir=output_dir, final_checkpoint=latest_checkpoint(output_dir),
                          metrics_path=output_dir / METRICS_NAME, global_step=trainer.state.global_step,
                          tokens_seen=trainer.state.num_input_tokens_seen, family=family_of(model.config),
                          recipe=recipe)


def _checkpoint_step(folder: Path) -> int:
    import json

    from ..runfiles import TRAINER_STATE_NAME

    return int(json.loads((Path(folder) / TRAINER_STATE_NAME).read_text(encoding="utf-8"))["global_step"])


def _is_main_process() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


__all__ = ["PretrainResult", "run_pretraining"]
