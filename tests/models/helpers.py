"""Builders shared by the model tests: tiny models per family and the transformers reference they must match."""

import torch
from transformers import GlmForCausalLM, LlamaForCausalLM

from hf_smallllm import FAMILIES
from hf_smallllm.convert.formats import native_model
from hf_smallllm.testing.tiny_models import tiny_random_model

ALL_FAMILIES = list(FAMILIES)
LLAMA_SHAPED = ["tinyllama", "chuxin", "skywork"]
CPU_ATTENTION = ["eager", "sdpa"]


def tiny_model(family: str, attn_implementation: str = "sdpa", seed: int = 0, **overrides):
    """A randomly initialised tiny model of `family` in eval mode. Norm weights and biases are randomised too, so
    that a wrong norm, bias or tying shows up in the logits."""
    return tiny_random_model(family, seed, attn_implementation=attn_implementation, **overrides)


def llama_reference(model) -> LlamaForCausalLM:
    """transformers' LlamaForCausalLM with the same weights as a Llama-shaped hf_smallllm model."""
    return native_model(model, "llama")


def glm_reference(model) -> GlmForCausalLM:
    """transformers' GlmForCausalLM with the same weights as a GEB model; GLM fuses the gate and up projections into
    `gate_up_proj` (gate first), which the GLM layout table does."""
    return native_model(model, "glm")


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
