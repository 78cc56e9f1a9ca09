"""GEB-1.3B (ChatGLM3-style GQA with half-rotary interleaved RoPE): thin subclasses of the shared core in
`modeling_smallllm.py`.

Everything that makes this family different lives in `GEBConfig`; the classes below only bind that config.
"""

from transformers.generation import GenerationMixin

from .configuration_geb import GEBConfig
from .modeling_smallllm import SmallLLMForCausalLM, SmallLLMModel, SmallLLMPreTrainedModel


class GEBPreTrainedModel(SmallLLMPreTrainedModel):
    config: GEBConfig


class GEBModel(GEBPreTrainedModel, SmallLLMModel):
    pass


class GEBForCausalLM(GEBPreTrainedModel, SmallLLMForCausalLM, GenerationMixin):
    base_model_class = GEBModel


__all__ = ["GEBForCausalLM", "GEBModel", "GEBPreTrainedModel"]
