"""hf_smallllm: TinyLlama, GEB, ChuXin, BTLM and Skywork as first-class Hugging Face Transformers models.

Importing the package registers every family with `AutoConfig`, `AutoModel` and `AutoModelForCausalLM`, so
`AutoModelForCausalLM.from_pretrained(path)` loads any checkpoint the package saved.
"""

from .families import FAMILIES, FAMILY_NAMES, PRESETS, family_of, preset_config, register
from .models import (
    BTLMConfig,
    BTLMForCausalLM,
    BTLMModel,
    BTLMPreTrainedModel,
    ChuXinConfig,
    ChuXinForCausalLM,
    ChuXinModel,
    ChuXinPreTrainedModel,
    GEBConfig,
    GEBForCausalLM,
    GEBModel,
    GEBPreTrainedModel,
    SkyworkConfig,
    SkyworkForCausalLM,
    SkyworkModel,
    SkyworkPreTrainedModel,
    SmallLLMConfig,
    SmallLLMForCausalLM,
    SmallLLMModel,
    SmallLLMPreTrainedModel,
    TinyLlamaConfig,
    TinyLlamaForCausalLM,
    TinyLlamaModel,
    TinyLlamaPreTrainedModel,
)

register()

__version__ = "0.1.0"

__all__ = [
    "FAMILIES",
    "FAMILY_NAMES",
    "PRESETS",
    "BTLMConfig",
    "BTLMForCausalLM",
    "BTLMModel",
    "BTLMPreTrainedModel",
    "ChuXinConfig",
    "ChuXinForCausalLM",
    "ChuXinModel",
    "ChuXinPreTrainedModel",
    "GEBConfig",
    "GEBForCausalLM",
    "GEBModel",
    "GEBPreTrainedModel",
    "SkyworkConfig",
    "SkyworkForCausalLM",
    "SkyworkModel",
    "SkyworkPreTrainedModel",
    "SmallLLMConfig",
    "SmallLLMForCausalLM",
    "SmallLLMModel",
    "SmallLLMPreTrainedModel",
    "TinyLlamaConfig",
    "TinyLlamaForCausalLM",
    "TinyLlamaModel",
    "TinyLlamaPreTrainedModel",
    "family_of",
    "preset_config",
    "register",
]
