"""Skywork-13B (deep, thin Llama-shaped model): thin subclasses of the shared core in `modeling_smallllm.py`.

Everything that makes this family different lives in `SkyworkConfig`; the classes below only bind that config.
"""

from transformers.generation import GenerationMixin

from .configuration_skywork import SkyworkConfig
from .modeling_smallllm import SmallLLMForCausalLM, SmallLLMModel, SmallLLMPreTrainedModel


class SkyworkPreTrainedModel(SmallLLMPreTrainedModel):
    config: SkyworkConfig


class SkyworkModel(SkyworkPreTrainedModel, SmallLLMModel):
    pass


class SkyworkForCausalLM(SkyworkPreTrainedModel, SmallLLMForCausalLM, GenerationMixin):
    base_model_class = SkyworkModel


__all__ = ["SkyworkForCausalLM", "SkyworkModel", "SkyworkPreTrainedModel"]
