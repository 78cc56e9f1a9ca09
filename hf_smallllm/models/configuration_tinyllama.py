"""TinyLlama-1.1B: the Llama 2 architecture with grouped-query attention (32 query heads, 4 key/value heads).

Defaults from TinyLlama's lit-gpt config `tiny_LLaMA_1b` and the Hugging Face config shared by every derivative of
`TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T` (arXiv 2401.02385; docs/architectures.md section 3.1).
"""

from .config_tables_smallllm import LLAMA_CONFIG
from .configuration_smallllm import SmallLLMConfig


class TinyLlamaConfig(SmallLLMConfig):
    """TinyLlama-1.1B: 22 layers, width 2048, GQA 32/4, RMSNorm 1e-5, RoPE theta 1e4, 2048 context, 32k vocab."""

    model_type = "smallllm_tinyllama"
    # TinyLlama publishes transformers' Llama layout: read as this class on purpose (no model-type mismatch warning).
    official_model_types = LLAMA_CONFIG.model_types

    vocab_size: int = 32000
    hidden_size: int = 2048
    intermediate_size: int = 5632
    num_hidden_layers: int = 22
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 4
    max_position_embeddings: int = 2048
    norm_eps: float = 1e-5
    initializer_range: float = 0.02
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2


__all__ = ["TinyLlamaConfig"]
