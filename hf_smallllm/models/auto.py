"""Registration of the five families with transformers' Auto classes and weight-conversion registry.

Importing `hf_smallllm` runs `register()`: `AutoConfig`, `AutoModel` and `AutoModelForCausalLM` then resolve the
package's `model_type` strings, and the official BTLM/GEB layouts convert on load. Kept outside the shipped model
files (remote code must not need hf_smallllm).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
from transformers.conversion_mapping import register_checkpoint_conversion_mapping

from ..convert.official_layouts import OFFICIAL_LAYOUT_TRANSFORMS
from .configuration_btlm import BTLMConfig
from .configuration_chuxin import ChuXinConfig
from .configuration_geb import GEBConfig
from .configuration_skywork import SkyworkConfig
from .configuration_smallllm import SmallLLMConfig
from .configuration_tinyllama import TinyLlamaConfig
from .modeling_btlm import BTLMForCausalLM, BTLMModel
from .modeling_chuxin import ChuXinForCausalLM, ChuXinModel
from .modeling_geb import GEBForCausalLM, GEBModel
from .modeling_skywork import SkyworkForCausalLM, SkyworkModel
from .modeling_smallllm import SmallLLMForCausalLM, SmallLLMModel
from .modeling_tinyllama import TinyLlamaForCausalLM, TinyLlamaModel


@dataclass(frozen=True)
class Family:
    """The classes of one architecture family."""

    name: str
    config_class: type[SmallLLMConfig]
    model_class: type[SmallLLMModel]
    causal_lm_class: type[SmallLLMForCausalLM]


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("tinyllama", TinyLlamaConfig, TinyLlamaModel, TinyLlamaForCausalLM),
        Family("geb", GEBConfig, GEBModel, GEBForCausalLM),
        Family("chuxin", ChuXinConfig, ChuXinModel, ChuXinForCausalLM),
        Family("btlm", BTLMConfig, BTLMModel, BTLMForCausalLM),
        Family("skywork", SkyworkConfig, SkyworkModel, SkyworkForCausalLM),
    )
}


def family_of(config: SmallLLMConfig) -> str:
    """The family name of a config (or of a model's config); the generic `SmallLLMConfig` is "smallllm"."""
    for family in FAMILIES.values():
        if type(config) is family.config_class:
            return family.name
    return "smallllm"


def register() -> None:
    """Register every family with the Auto classes; safe to call more than once."""
    pairs = [(SmallLLMConfig, SmallLLMModel, SmallLLMForCausalLM)] + [
        (f.config_class, f.model_class, f.causal_lm_class) for f in FAMILIES.values()
    ]
    for config_class, model_class, causal_lm_class in pairs:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        AutoModelForCausalLM.register(config_class, causal_lm_class, exist_ok=True)
    for model_type, transforms in OFFICIAL_LAYOUT_TRANSFORMS.items():
        register_checkpoint_conversion_mapping(model_type, transforms(), overwrite=True)


__all__ = ["FAMILIES", "Family", "family_of", "register"]
