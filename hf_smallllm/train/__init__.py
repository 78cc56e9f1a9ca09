"""Training: recipes, data loading, optimizers (incl. muP groups), the run builder (`run.build_run`), the engine
(`engine.py`: one process, DDP, FSDP2, DeepSpeed ZeRO) and its checkpointer (`checkpointer.py`).

The public API is imported on first use (`from hf_smallllm.train import run_pretraining`), so importing a light
submodule such as `checkpoint` does not pull in transformers' Trainer. The run's metrics file and checkpoint names
live in `hf_smallllm.runfiles` (re-exported here: `append_metrics`, `read_metrics`, `latest_checkpoint`,
`list_checkpoints`).
"""

import importlib

_API = {
    "run_pretraining": "api",
    "build_run": "run",
    "TrainingEngine": "engine",
    "Checkpointer": "checkpointer",
    "ParallelPlan": "parallel",
    "PretrainResult": "api",
    "load_recipe": "recipe",
    "Recipe": "recipe",
    "RecipeError": "recipe",
    "append_metrics": "..runfiles",
    "read_metrics": "..runfiles",
    "latest_checkpoint": "..runfiles",
    "list_checkpoints": "..runfiles",
    "apply_fsdp2": "fsdp",
    "get_mup_param_groups": "mup",
}


def __getattr__(name: str):
    if name in _API:
        module = _API[name] if _API[name].startswith("..") else f".{_API[name]}"
        return getattr(importlib.import_module(module, __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_API)
