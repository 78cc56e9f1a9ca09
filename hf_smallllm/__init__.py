"""hf_smallllm: TinyLlama, GEB, ChuXin, BTLM and Skywork as first-class Hugging Face Transformers models.

Importing the package registers every family with `AutoConfig`, `AutoModel` and `AutoModelForCausalLM`, so
`AutoModelForCausalLM.from_pretrained(path)` loads any checkpoint the package saved.
"""

import logging as _logging


class _DropBitsandbytesKernelNotice(_logging.Filter):
    """bitsandbytes, imported by PEFT whenever it is installed, looks up an optional faster CPU 4-bit kernel on the
    Hub at import and, offline or untrusted, warns "Failed to load CPU gemm_4bit_forward ... Set trust_remote_code=
    True". Its own CPU kernel is used instead, so nothing is lost; the advice to trust remote code alarms users of
    every run, 4-bit or not. Only that message is dropped."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return "gemm_4bit_forward from kernels-community" not in record.getMessage()


_logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_DropBitsandbytesKernelNotice())

# imported after the filter above: the models import PEFT, which imports bitsandbytes
from . import models as _models  # noqa: E402
from .families import FAMILIES, FAMILY_NAMES, PRESETS, family_of, preset_config, register  # noqa: E402
from .models.peft_smallllm import install_peft_defaults  # noqa: E402

register()
install_peft_defaults()  # PEFT's default target modules for every smallllm_* model type, once peft is imported

__version__ = "0.1.0"

# every model class, as `hf_smallllm.models` exports them (the shared core and each family's, found by file)
globals().update({name: getattr(_models, name) for name in _models.__all__})

__all__ = ["FAMILIES", "FAMILY_NAMES", "PRESETS", *_models.__all__, "family_of", "preset_config", "register"]
