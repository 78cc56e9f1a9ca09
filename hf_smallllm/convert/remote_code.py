"""Remote-code packaging: a saved folder that loads without hf_smallllm installed.

The folder carries the shipped model files (the family's `configuration_*.py` / `modeling_*.py` and every sibling
they import, found with transformers' own relative-import walker) and an `auto_map` in `config.json` naming the
family's config and model classes. Someone without hf_smallllm then loads it with
`AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)` (lm-eval's `hf` model, `pipeline`, TRL).
With hf_smallllm imported, its registered classes are used and the folder's code is not run: transformers prefers
explicitly registered local classes even when `trust_remote_code=True` is passed.

Every `save_pretrained` of a model class writes both already (the families are registered for their Auto classes,
`families.register()`, and `modeling_smallllm.py` completes the map); `add_remote_code` does the same for a folder
written without a model instance (conversions stream tensors and save only the config) and for publishing folders
saved before that. Classes are found from `config.json`'s `model_type` through the Auto registries, never from a
family name. It lives in `convert` (beside the converter, its first user), not in `models/`: it is packaging, not
shipped code. Importing it imports `hf_smallllm`, which registers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import UsageFileNotFoundError
from ..runfiles import write_json_atomic

AUTO_CLASSES = ("AutoConfig", "AutoModel", "AutoModelForCausalLM")


def auto_classes_for(model_type: str) -> dict[str, type]:
    """{Auto class name: our class} for a registered hf_smallllm model_type."""
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    # importing this module ran hf_smallllm/__init__.py, which registered the families
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"model_type {model_type!r} is not a registered architecture")
    config_class = CONFIG_MAPPING[model_type]
    classes = {"AutoConfig": config_class}
    for name, auto in (("AutoModel", AutoModel), ("AutoModelForCausalLM", AutoModelForCausalLM)):
        try:
            classes[name] = auto._model_mapping[config_class]
        except KeyError:
            continue
    if not config_class.__module__.startswith("hf_smallllm.models."):
        raise ValueError(f"model_type {model_type!r} is not an hf_smallllm architecture "
                         f"({config_class.__module__}); nothing to package as remote code")
    return classes


def remote_code_files(classes: dict[str, type]) -> list[Path]:
    """The class files plus every file they import relatively, each once, sorted by name."""
    from transformers.dynamic_module_utils import get_relative_import_files

    files = set()
    for cls in classes.values():
        module_file = Path(sys.modules[cls.__module__].__file__)
        files.add(module_file)
        files.update(Path(p) for p in get_relative_import_files(module_file))
    return sorted(files, key=lambda p: p.name)


def auto_map_for(classes: dict[str, type]) -> dict[str, str]:
    return {name: f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}" for name, cls in classes.items()}


def add_remote_code(folder: str | Path) -> list[str]:
    """Copy the model files into `folder` (a save_pretrained folder) and write `auto_map` into its config.json.
    Returns the names of the copied files. config.json is rewritten through a temporary file."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.exists():
        raise UsageFileNotFoundError(f"{folder} has no config.json")
    config = json.loads(config_path.read_text())
    classes = auto_classes_for(config.get("model_type", ""))
    copied = []
    for source in remote_code_files(classes):
        target = folder / source.name
        target.unlink(missing_ok=True)  # the folder may hold hard links to a checkpoint: never write through them
        target.write_bytes(source.read_bytes())
        copied.append(source.name)
    config["auto_map"] = auto_map_for(classes)
    write_json_atomic(config_path, config, sort_keys=True)  # replaces a hard link instead of writing through it
    return copied


__all__ = ["AUTO_CLASSES", "add_remote_code", "auto_classes_for", "auto_map_for", "remote_code_files"]
