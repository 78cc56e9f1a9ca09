"""ChuXin-1.6B: a Llama 2 backbone (multi-head attention) with DeepSeek-LLM's 102,400-entry byte-level BPE.

Defaults from `chuxin-llm/Chuxin-1.6B-Base` config.json (arXiv 2405.04828; docs/architectures.md section 4.1), except
the
special-token ids: the published config.json says BOS 1 / EOS 2, but its tokenizer and generation_config use
DeepSeek's 100000 / 100001 (EOS doubles as padding). The tokenizer's ids are the ones the weights were trained with.
"""

from .config_tables_smallllm import LLAMA_CONFIG
from .configuration_smallllm import SmallLLMConfig


class ChuXinConfig(SmallLLMConfig):
    """ChuXin-1.6B: 24 layers, width 2048, 32 heads (MHA), RMSNorm 1e-5, RoPE theta 1e4, 4096 context, 102,400 vocab."""

    model_type = "smallllm_chuxin"
    # ChuXin publishes transformers' Llama layout: read as this class on purpose (no model-type mismatch warning).
    official_model_types = LLAMA_CONFIG.model_types

    vocab_size: int = 102400
    hidden_size: int = 2048
    intermediate_size: int = 5632
    num_hidden_layers: int = 24
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # multi-head attention: follows num_attention_heads
    max_position_embeddings: int = 4096
    norm_eps: float = 1e-5
    initializer_range: float = 0.02
    bos_token_id: int | None = 100000
    eos_token_id: int | list[int] | None = 100001
    pad_token_id: int | None = 100001


__all__ = ["ChuXinConfig"]
