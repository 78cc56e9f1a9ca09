"""The model classes of hf_smallllm: one shared core, and each family's thin bindings.

The family classes are exported from their own files: every `configuration_<family>.py` and `modeling_<family>.py`
here contributes its `__all__`, so adding a family adds no line to this file (`hf_smallllm/__init__.py` re-exports
the same list). Not shipped as remote code: no model file imports it.
"""

import importlib
import pkgutil

from .configuration_smallllm import SmallLLMConfig
from .modeling_smallllm import SmallLLMForCausalLM, SmallLLMModel, SmallLLMPreTrainedModel

__all__ = ["SmallLLMConfig", "SmallLLMForCausalLM", "SmallLLMModel", "SmallLLMPreTrainedModel"]


def export_family_classes() -> list[str]:
    """Import every family's configuration/modeling file found on this package's path and bind the names of their
    `__all__` here; returns the names, sorted. Run at import, and again by whoever extends the path (tests)."""
    names = []
    for module_info in pkgutil.iter_modules(__path__):
        if not module_info.name.startswith(("configuration_", "modeling_")) or module_info.name.endswith("_smallllm"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for name in module.__all__:
            globals()[name] = getattr(module, name)
            names.append(name)
    return sorted(names)


__all__ += export_family_classes()
