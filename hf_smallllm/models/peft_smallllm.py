"""Default PEFT target modules for the hf_smallllm model types, registered whenever peft is (or gets) imported.

PEFT chooses the modules of an adapter config without `target_modules` (e.g. `LoraConfig(task_type="CAUSAL_LM")`)
from tables keyed by `model_type` (`peft.utils.constants.TRANSFORMERS_MODELS_TO_<METHOD>_TARGET_MODULES_MAPPING`,
read when the adapter is created); an unknown type fails with "Please specify `target_modules`". Every family
uses transformers' Llama module names, so the entries are Llama's: for LoRA all seven projections (attention
q/k/v/o and MLP gate/up/down, the QLoRA paper's choice, which PEFT also makes for `"all-linear"`), for every other
method PEFT's own Llama entry. The model types are those of `SmallLLMConfig` and its subclasses (the families,
or a user's own config class) defined when the tables are filled. Entries a user registered first are kept.

peft takes seconds to import, so importing this file never imports it: the tables are filled at once when
`peft.utils.constants` is already loaded, otherwise right after it loads (a `sys.meta_path` finder that only
watches that one module name and removes itself once it has fired). Nothing is installed by importing this file:
`import hf_smallllm` calls `install_peft_defaults()`, and so does building a model (`SmallLLMPreTrainedModel.
__init__`), because a folder loaded with `trust_remote_code=True` in a process without hf_smallllm has no package
import to do it. This file ships as remote code; it imports only the standard library and its siblings.
"""

import importlib.abc
import sys

from .configuration_smallllm import SmallLLMConfig

PEFT_CONSTANTS = "peft.utils.constants"
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def model_types() -> list[str]:
    """The `model_type` of `SmallLLMConfig` and of every subclass defined so far (the families, a user's own)."""
    found, pending = [], [SmallLLMConfig]
    while pending:
        config_class = pending.pop()
        if config_class.model_type not in found:
            found.append(config_class.model_type)
        pending.extend(config_class.__subclasses__())
    return found


def register_peft_defaults(constants=None) -> int:
    """Add the model types to every PEFT target table that has a Llama entry; returns how many entries were added
    (0 when peft is not loaded yet or everything is registered already)."""
    constants = constants if constants is not None else sys.modules.get(PEFT_CONSTANTS)
    if constants is None:
        return 0
    types = model_types()
    lora = getattr(constants, "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING", None)
    added = 0
    for name, table in vars(constants).items():
        if not (name.startswith("TRANSFORMERS_MODELS_TO_") and name.endswith("_MODULES_MAPPING")):
            continue
        if not isinstance(table, dict) or "llama" not in table:
            continue
        default = list(LORA_TARGET_MODULES) if table is lora else table["llama"]
        for model_type in types:
            if model_type not in table:
                table[model_type] = list(default) if isinstance(default, list) else default
                added += 1
    return added


class _RegisteringLoader(importlib.abc.Loader):
    """Runs the real loader of `peft.utils.constants`, then registers; everything else is the real loader's."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        register_peft_defaults(module)

    def __getattr__(self, name):  # get_source, get_filename, ... for tracebacks and inspect
        return getattr(self._loader, name)


class PeftConstantsHook(importlib.abc.MetaPathFinder):
    """Finds `peft.utils.constants` through the other finders and wraps its loader; ignores every other name."""

    smallllm_peft_hook = True

    def find_spec(self, fullname, path=None, target=None):
        if fullname != PEFT_CONSTANTS:
            return None
        for finder in list(sys.meta_path):
            if getattr(finder, "smallllm_peft_hook", False) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _RegisteringLoader(spec.loader)
                if self in sys.meta_path:
                    sys.meta_path.remove(self)
                return spec
        return None


def install_peft_defaults() -> None:
    """Register now if peft is loaded, else once it loads (one hook per process, whichever copy installs it)."""
    if PEFT_CONSTANTS in sys.modules:
        register_peft_defaults()
    elif not any(getattr(finder, "smallllm_peft_hook", False) for finder in sys.meta_path):
        sys.meta_path.insert(0, PeftConstantsHook())


__all__ = ["LORA_TARGET_MODULES", "PeftConstantsHook", "install_peft_defaults", "model_types",
           "register_peft_defaults"]
