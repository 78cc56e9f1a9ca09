"""Reference twins: transformers' own implementation of a family, holding the very same weight tensors.

TinyLlama, ChuXin and Skywork are compared with `LlamaForCausalLM`, GEB with `GlmForCausalLM` (which fuses the gate
and up projections, so those two matrices are concatenated once), both built by `convert.formats.native_model`, and
BTLM, which has no transformers counterpart, with itself running eager attention. Twins are built on the meta device
and then take our tensors (`assign=True`), so a published-size pair costs one copy of the weights, not two.
"""

import copy

from accelerate import init_empty_weights

from ..convert.formats import native_model
from ..families import FAMILIES, family_of


def reference_twin(model):
    """(twin, description) for an hf_smallllm causal LM: the transformers model it must be at least as fast as."""
    config = model.config
    if config.position_embedding_type != "alibi":
        twin = native_model(model, empty_init=True)
        return twin, type(twin).__name__
    twin_config = copy.deepcopy(config)
    twin_config._attn_implementation = "eager"
    with init_empty_weights(include_buffers=False):
        twin = FAMILIES[family_of(config)].causal_lm_class(twin_config)
    twin.load_state_dict(model.state_dict(), strict=True, assign=True)
    if config.tie_word_embeddings:
        twin.tie_weights()
    return twin.eval(), f"{type(model).__name__} (eager ALiBi)"
