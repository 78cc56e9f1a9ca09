"""Builders shared by the model tests: tiny models per family and the transformers reference they must match."""

import torch
from transformers import GlmConfig, GlmForCausalLM, LlamaConfig, LlamaForCausalLM

from hf_smallllm import FAMILIES, preset_config
from hf_smallllm.models.configuration_smallllm import SmallLLMConfig

ALL_FAMILIES = list(FAMILIES)
LLAMA_SHAPED = ["tinyllama", "chuxin", "skywork"]
CPU_ATTENTION = ["eager", "sdpa"]


def tiny_model(family: str, attn_implementation: str = "sdpa", seed: int = 0, **overrides):
    """A randomly initialised tiny model of `family` in eval mode. Norm weights and biases are randomised too, so
    that a wrong norm, bias or tying shows up in the logits."""
    torch.manual_seed(seed)
    config = preset_config(family, "tiny", attn_implementation=attn_implementation, **overrides)
    model = FAMILIES[family].causal_lm_class(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                param.add_(torch.randn_like(param) * 0.1)
    return model


def llama_reference(model) -> LlamaForCausalLM:
    """transformers' LlamaForCausalLM with the same weights as a Llama-shaped hf_smallllm model."""
    c: SmallLLMConfig = model.config
    reference_config = LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, head_dim=c.head_dim, hidden_act=c.hidden_act,
        max_position_embeddings=c.max_position_embeddings, rms_norm_eps=c.norm_eps,
        rope_parameters=dict(c.rope_parameters), tie_word_embeddings=c.tie_word_embeddings,
        bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id,
        attn_implementation=c._attn_implementation,
    )
    reference = LlamaForCausalLM(reference_config).eval()
    reference.load_state_dict(model.state_dict(), strict=True)
    return reference


def glm_reference(model) -> GlmForCausalLM:
    """transformers' GlmForCausalLM (attention_bias=False) with the same weights as a GEB model; GLM fuses the gate
    and up projections into `gate_up_proj` (gate first)."""
    c: SmallLLMConfig = model.config
    reference_config = GlmConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, head_dim=c.head_dim, max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.norm_eps, attention_bias=False, rope_parameters=dict(c.rope_parameters),
        bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id,
        attn_implementation=c._attn_implementation,
    )
    reference = GlmForCausalLM(reference_config).eval()
    state = dict(model.state_dict())
    for i in range(c.num_hidden_layers):
        prefix = f"model.layers.{i}.mlp."
        gate, up = state.pop(prefix + "gate_proj.weight"), state.pop(prefix + "up_proj.weight")
        state[prefix + "gate_up_proj.weight"] = torch.cat([gate, up], dim=0)
    reference.load_state_dict(state, strict=True)
    return reference


def reference_model(model):
    """The transformers model a family must match, or None where the reference is a golden file (BTLM)."""
    if model.config.model_type == "smallllm_geb":
        return glm_reference(model)
    if model.config.model_type == "smallllm_btlm":
        return None
    return llama_reference(model)


def random_ids(vocab_size: int, shape, low: int = 3) -> torch.Tensor:
    """Token ids that avoid the special ids 0-2 of the tiny presets."""
    return torch.randint(low, vocab_size, shape)
