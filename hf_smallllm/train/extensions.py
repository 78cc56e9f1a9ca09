"""Recipe sections that other parts of the package plug into a training run.

A training recipe (YAML) may carry sections beyond model/data/optimizer, e.g. `publish:` (push snapshots to the
Hub) or `domain_eval:` (per-domain validation). Each known section maps to a builder, imported only when the
section is present, that returns `transformers.TrainerCallback` objects, which the pretraining engine drives as
a Trainer would (the SFT trainers too), so a section works wherever callbacks do.

Builders have the signature `builder(section: dict, context: RunContext) -> list[TrainerCallback]`.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runfiles import METRICS_NAME


def _publish_builder():
    from ..hub.recipe import build_publish_callbacks

    return build_publish_callbacks


def _domain_eval_builder():
    from ..eval.recipe import build_domain_eval_callbacks

    return build_domain_eval_callbacks


# section name -> a function returning its builder. The imports are plain (visible to readers and to the import-layer
# test in tests/test_layers.py) but run only when a recipe has the section: `hub` and `eval` sit below `train` in the
# package's layers and pull in huggingface_hub / the evaluation code that most runs never need.
RECIPE_SECTIONS: dict[str, Callable[[], Callable]] = {
    "publish": _publish_builder,
    "domain_eval": _domain_eval_builder,
}


@dataclass
class RunContext:
    """What a section builder may need to know about the run it joins."""

    # checkpoints are `runfiles.checkpoint_dir(output_dir, global_step)`, each a save_pretrained folder
    output_dir: Path
    recipe: dict[str, Any]  # the whole parsed recipe
    family: str  # "tinyllama", "geb", "chuxin", "btlm", "skywork" (or "smallllm" for a custom config)
    tokenizer: Any = None  # a transformers tokenizer, when the run has one
    is_main_process: bool = True
    metrics_path: Path = field(default=None)  # JSON lines, see hf_smallllm.runfiles

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        if self.metrics_path is None:
            self.metrics_path = self.output_dir / METRICS_NAME


def resolve_section_builder(name: str):
    """The builder function of a recipe section; ValueError names the known sections for an unknown one."""
    if name not in RECIPE_SECTIONS:
        raise ValueError(f"unknown recipe section {name!r}; known sections: {', '.join(sorted(RECIPE_SECTIONS))}")
    return RECIPE_SECTIONS[name]()


def build_section_callbacks(recipe: dict[str, Any], context: RunContext) -> list:
    """Callbacks for every extension section present in `recipe` (sections set to null/false are skipped)."""
    callbacks = []
    for name in RECIPE_SECTIONS:
        section = recipe.get(name)
        if section:
            callbacks.extend(resolve_section_builder(name)(section, context))
    return callbacks


__all__ = ["RECIPE_SECTIONS", "RunContext", "build_section_callbacks", "resolve_section_builder"]
