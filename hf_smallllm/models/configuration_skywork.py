"""Skywork-13B: a deep, thin Llama-shaped model (52 layers of width 4608).

Defaults from `Skywork/Skywork-13B-base` config.json (arXiv 2310.19341; docs/architectures.md section 2.1). The
embedding
has 65,519 rows although the paper's vocabulary table adds up to 65,536 (the 17 reserved entries are not shipped).
"""

from .config_tables_smallllm import LLAMA_CONFIG, SKYWORK_CONFIG
from .configuration_smallllm import SmallLLMConfig


class SkyworkConfig(SmallLLMConfig):
    """Skywork-13B: 52 layers, width 4608, 36 heads (MHA), RMSNorm 1e-6, RoPE theta 1e4, 4096 context, 65,519 vocab."""

    model_type = "smallllm_skywork"
    # Skywork's own config (remote code) and Llama-layout copies of it are read as this class on purpose.
    official_model_types = SKYWORK_CONFIG.model_types + LLAMA_CONFIG.model_types

    vocab_size: int = 65519
    hidden_size: int = 4608
    intermediate_size: int = 12288
    num_hidden_layers: int = 52
    num_attention_heads: int = 36
    num_key_value_heads: int | None = None  # multi-head attention: follows num_attention_heads
    max_position_embeddings: int = 4096
    norm_eps: float = 1e-6
    initializer_range: float = 0.01
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pad_token_id: int | None = 0


__all__ = ["SkyworkConfig"]
