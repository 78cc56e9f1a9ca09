"""Checkpoint conversion between the families' official layouts, lit-gpt training checkpoints, native transformers
models and the package's own layout (see docs/conversion.md), and the GGUF export for llama.cpp (`gguf.py`).

The layouts themselves (tensor names, fusions, drops, config fields) are tables next to the models
(`hf_smallllm.layouts`); this package plans, streams, writes and verifies conversions from them.
"""

from .configs import InexpressibleConfigError
from .converter import (
    ConversionReport,
    litgpt_to_package,
    load_package_config,
    official_to_package,
    package_to_native,
    package_to_official,
)
from .gguf import package_to_gguf
from .gguf_reference import gguf_reference_logits
from .gguf_vocab import TokenizerExportError
from .plan import CheckpointMismatchError
from .verify import ConversionVerificationError

__all__ = [
    "CheckpointMismatchError",
    "ConversionReport",
    "ConversionVerificationError",
    "InexpressibleConfigError",
    "TokenizerExportError",
    "gguf_reference_logits",
    "litgpt_to_package",
    "load_package_config",
    "official_to_package",
    "package_to_gguf",
    "package_to_native",
    "package_to_official",
]
