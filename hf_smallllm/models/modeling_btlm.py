"""BTLM-3B-8K (GPT-2 style with SwiGLU, ALiBi and muP): thin subclasses of the shared core in `modeling_smallllm.py`.

Everything that makes this family different lives in `BTLMConfig`; the classes below only bind that config.
"""

from transformers.generation import GenerationMixin

from .configuration_btlm import BTLMConfig
from .modeling_smallllm import SmallLLMForCausalLM, SmallLLMModel, SmallLLMPreTrainedModel


class BTLMPreTrainedModel(SmallLLMPreTrainedModel):
    config: BTLMConfig


class BTLMModel(BTLMPreTrainedModel, SmallLLMModel):
    pass


class BTLMForCausalLM(BTLMPreTrainedModel, SmallLLMForCausalLM, GenerationMixin):
    base_model_class = BTLMModel


__all__ = ["BTLMForCausalLM", "BTLMModel", "BTLMPreTrainedModel"]
