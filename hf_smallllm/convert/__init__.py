"""Checkpoint conversion between the families' official layouts, lit-gpt training checkpoints, native transformers
models and the package's own layout (see docs/conversion.md).

`OFFICIAL_LAYOUT_TRANSFORMS` (transformers' on-load conversion of official BTLM/GEB folders) is imported eagerly:
`hf_smallllm.families` registers it while the package is being imported. The converter API below is imported on
first use, because it needs the registered model classes.
"""

from .official_layouts import OFFICIAL_LAYOUT_TRANSFORMS

_CONVERTER_API = (
    "ConversionReport",
    "litgpt_to_package",
    "load_package_config",
    "official_to_package",
    "package_to_native",
    "package_to_official",
)
_ERRORS = {
    "CheckpointMismatchError": "plan",
    "ConversionVerificationError": "verify",
    "InexpressibleConfigError": "configs",
}


def __getattr__(name: str):
    import importlib

    if name in _CONVERTER_API:
        return getattr(importlib.import_module(".converter", __name__), name)
    if name in _ERRORS:
        return getattr(importlib.import_module(f".{_ERRORS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["OFFICIAL_LAYOUT_TRANSFORMS", *_CONVERTER_API, *_ERRORS]
