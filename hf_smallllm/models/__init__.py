"""The model classes of hf_smallllm: one shared core, five thin family bindings."""

from .configuration_btlm import BTLMConfig
from .configuration_chuxin import ChuXinConfig
from .configuration_geb import GEBConfig
from .configuration_skywork import SkyworkConfig
from .configuration_smallllm import SmallLLMConfig
from .configuration_tinyllama import TinyLlamaConfig
from .modeling_btlm import BTLMForCausalLM, BTLMModel, BTLMPreTrainedModel
from .modeling_chuxin import ChuXinForCausalLM, ChuXinModel, ChuXinPreTrainedModel
from .modeling_geb import GEBForCausalLM, GEBModel, GEBPreTrainedModel
from .modeling_skywork import SkyworkForCausalLM, SkyworkModel, SkyworkPreTrainedModel
from .modeling_smallllm import SmallLLMForCausalLM, SmallLLMModel, SmallLLMPreTrainedModel
from .modeling_tinyllama import TinyLlamaForCausalLM, TinyLlamaModel, TinyLlamaPreTrainedModel

__all__ = [
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
]
