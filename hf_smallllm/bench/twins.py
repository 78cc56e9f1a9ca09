"""Reference twins: transformers' own implementation of a family, holding the very same weight tensors.

TinyLlama, ChuXin and Skywork are compared with `LlamaForCausalLM`, GEB with `GlmForCausalLM` (which fuses the gate
and up projections, so those two matrices are concatenated once), and BTLM, which has no transformers counterpart,
with itself running eager attention. Twins are built on the meta device and then take our tensors (`assign=True`),
so a published-size pair costs one copy of the weights, not two.
"""

import copy

import torch
from accelerate import init_empty_weights
from transformers import GlmConfig, GlmForCausalLM, LlamaConfig, LlamaForCausalLM

from ..families import FAMILIES, family_of


def _reference_config(config, cls):
    common = dict(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, head_dim=config.head_dim,
        max_position_embeddings=config.max_position_embeddings, rms_norm_eps=config.norm_eps,
        rope_parameters=dict(config.rope_parameters), tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        attn_implementation=config._attn_implementation,
    )
    if cls is GlmConfig:
        common["attention_bias"] = False
    return cls(**common)


def reference_twin(model):
    """(twin, description) for an hf_smallllm causal LM: the transformers model it must be at least as fast as."""
    config = model.config
    family = family_of(config)
    state = model.state_dict()
    if config.position_embedding_type == "alibi":
        twin_config = copy.deepcopy(config)
        twin_config._attn_implementation = "eager"
        with init_empty_weights(include_buffers=False):
            twin = FAMILIES[family].causal_lm_class(twin_config)
        description = f"{type(model).__name__} (eager ALiBi)"
    elif config.rope_layout == "interleaved":
        with init_empty_weights(include_buffers=False):
            twin = GlmForCausalLM(_reference_config(config, GlmConfig))
        state = dict(state)
        for i in range(config.num_hidden_layers):
            prefix = f"model.layers.{i}.mlp."
            state[prefix + "gate_up_proj.weight"] = torch.cat(
                [state.pop(prefix + "gate_proj.weight"), state.pop(prefix + "up_proj.weight")], dim=0)
        description = "GlmForCausalLM"
    else:
        with init_empty_weights(include_buffers=False):
            twin = LlamaForCausalLM(_reference_config(config, LlamaConfig))
        description = "LlamaForCausalLM"
    twin.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        twin.tie_weights()
    return twin.eval(), description
