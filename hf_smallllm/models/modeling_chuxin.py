"""ChuXin-1.6B (Llama 2 backbone, DeepSeek tokenizer, EOS-reset packed training): thin subclasses of the shared core in
`modeling_smallllm.py`.

Everything that makes this family different lives in `ChuXinConfig`; the classes below only bind that config.
"""

from transformers.generation import GenerationMixin

from .configuration_chuxin import ChuXinConfig
from .modeling_smallllm import SmallLLMForCausalLM, SmallLLMModel, SmallLLMPreTrainedModel


class ChuXinPreTrainedModel(SmallLLMPreTrainedModel):
    config: ChuXinConfig


class ChuXinModel(ChuXinPreTrainedModel, SmallLLMModel):
    pass


class ChuXinForCausalLM(ChuXinPreTrainedModel, SmallLLMForCausalLM, GenerationMixin):
    base_model_class = ChuXinModel


__all__ = ["ChuXinForCausalLM", "ChuXinModel", "ChuXinPreTrainedModel"]
