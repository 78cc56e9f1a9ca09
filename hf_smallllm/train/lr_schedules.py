"""Learning-rate schedules as multipliers of the peak lr, applied to every parameter group alike (so muP's
per-group ratios are preserved), after a linear warmup from 0:

- `cosine`: cosine decay to `min_lr_ratio` at the last step (TinyLlama: 4e-4 -> 4e-5);
- `linear`: linear decay to `min_lr_ratio` (BTLM: 0.012 -> ~1e-4 over both sequence-length stages);
- `constant`: the peak lr after warmup;
- `cosine_then_constant`: cosine decay to `min_lr_ratio` at `decay_until` (a fraction of training), then constant
  (Skywork-13B: 6e-4 -> 6e-5 over the first 2T tokens, then 6e-5).

A staged recipe (recipe.py) follows the run-wide schedule over all its steps, except in stages with their own
segment (`schedule` or `optimizer.lr` set in the stage): there the multiplier is the stage's schedule over the
stage's steps, scaled by stage lr / optimizer.lr (Skywork-13B's stage 2: constant 6e-5 after stage 1's 6e-4 peak).
"""

import math
from bisect import bisect_right
from functools import partial

from torch.optim.lr_scheduler import LambdaLR


def lr_multiplier(step: int, kind: str, max_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.1,
                  decay_until: float = 1.0) -> float:
    """The lr multiplier at optimizer step `step` (0-based: the multiplier used by the step's update)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    end = max_steps if kind != "cosine_then_constant" else max(round(decay_until * max_steps), warmup_steps + 1)
    progress = min(max((step - warmup_steps) / max(end - warmup_steps - 1, 1), 0.0), 1.0)
    if kind == "linear":
        return 1.0 - (1.0 - min_lr_ratio) * progress
    if kind in ("cosine", "cosine_then_constant"):
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr schedule {kind!r}")


def _section_multiplier(step: int, schedule, max_steps: int) -> float:
    return lr_multiplier(step, schedule.type, max_steps, warmup_steps=schedule.warmup_steps,
                         min_lr_ratio=schedule.min_lr_ratio, decay_until=schedule.decay_until)


def staged_lr_multiplier(step: int, schedule, max_steps: int, segments: tuple = ()) -> float:
    """The multiplier at `step` of a run whose `segments` ((first step, steps, schedule, lr scale), sorted) replace
    the run-wide `schedule` over their steps."""
    index = bisect_right([segment[0] for segment in segments], step) - 1
    if index >= 0:
        first, steps, own, scale = segments[index]
        if step < first + steps or index == len(segments) - 1 and step >= max_steps:
            return scale * _section_multiplier(step - first, own, steps)
    return _section_multiplier(step, schedule, max_steps)


def build_lr_scheduler(optimizer, schedule, max_steps: int, stages=()) -> LambdaLR:
    """A LambdaLR for a recipe's `schedule` section and, for a staged recipe, its `stage_plans` (recipe.Stage)
    with their own segments (the peak lr of a segment relative to the optimizer's lr)."""
    base_lr = optimizer.defaults["lr"]
    segments = tuple((stage.first_step, stage.steps, stage.schedule, stage.lr / base_lr) for stage in stages
                     if stage.schedule is not None)
    return LambdaLR(optimizer, partial(staged_lr_multiplier, schedule=schedule, max_steps=max_steps,
                                       segments=segments))


__all__ = ["build_lr_scheduler", "lr_multiplier", "staged_lr_multiplier"]
