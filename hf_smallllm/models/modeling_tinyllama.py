"""TinyLlama-1.1B (Llama 2 architecture with grouped-query attention): thin subclasses of the shared core in
`modeling_smallllm.py`.

Everything that makes this family different lives in `TinyLlamaConfig`; the classes below only bind that config.
"""

from transformers.generation import GenerationMixin

from .configuration_tinyllama import TinyLlamaConfig
from .modeling_smallllm import SmallLLMForCausalLM, SmallLLMModel, SmallLLMPreTrainedModel


class TinyLlamaPreTrainedModel(SmallLLMPreTrainedModel):
    config: TinyLlamaConfig


class TinyLlamaModel(TinyLlamaPreTrainedModel, SmallLLMModel):
    pass


class TinyLlamaForCausalLM(TinyLlamaPreTrainedModel, SmallLLMForCausalLM, GenerationMixin):
    base_model_class = TinyLlamaModel


__all__ = ["TinyLlamaForCausalLM", "TinyLlamaModel", "TinyLlamaPreTrainedModel"]
