"""Recipe sections that other parts of the package plug into a training run.

A training recipe (YAML) may carry sections beyond model/data/optimizer, e.g. `publish:` (push snapshots to the
Hub) or `domain_eval:` (per-domain validation). Each known section maps to a builder, imported only when the
section is present, that returns `transformers.TrainerCallback` objects. Both training entry points (the
`transformers.Trainer` one and the Accelerate-native loop) drive the same callbacks, so a section works in both.

Builders have the signature `builder(section: dict, context: RunContext) -> list[TrainerCallback]`.
"""

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# section name -> "module:function" of its builder
RECIPE_SECTIONS: dict[str, str] = {
    "publish": "hf_smallllm.hub.recipe:build_publish_callbacks",
    "domain_eval": "hf_smallllm.eval.recipe:build_domain_eval_callbacks",
}


@dataclass
class RunContext:
    """What a section builder may need to know about the run it joins."""

    output_dir: Path  # checkpoints are `output_dir / f"checkpoint-{global_step}"`, each a save_pretrained folder
    recipe: dict[str, Any]  # the whole parsed recipe
    family: str  # "tinyllama", "geb", "chuxin", "btlm", "skywork" (or "smallllm" for a custom config)
    tokenizer: Any = None  # a transformers tokenizer, when the run has one
    is_main_process: bool = True
    metrics_path: Path = field(default=None)  # JSON lines, see hf_smallllm.train.metrics

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        if self.metrics_path is None:
            self.metrics_path = self.output_dir / "metrics.jsonl"


def resolve_section_builder(name: str):
    """The builder function of a recipe section; ValueError names the known sections for an unknown one."""
    if name not in RECIPE_SECTIONS:
        raise ValueError(f"unknown recipe section {name!r}; known sections: {', '.join(sorted(RECIPE_SECTIONS))}")
    module_name, function_name = RECIPE_SECTIONS[name].split(":")
    return getattr(importlib.import_module(module_name), function_name)


def build_section_callbacks(recipe: dict[str, Any], context: RunContext) -> list:
    """Callbacks for every extension section present in `recipe` (sections set to null/false are skipped)."""
    callbacks = []
    for name in RECIPE_SECTIONS:
        section = recipe.get(name)
        if section:
            callbacks.extend(resolve_section_builder(name)(section, context))
    return callbacks


__all__ = ["RECIPE_SECTIONS", "RunContext", "build_section_callbacks", "resolve_section_builder"]
