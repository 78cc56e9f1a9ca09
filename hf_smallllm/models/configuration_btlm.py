"""BTLM-3B-8K: a GPT-2-style model with SwiGLU, ALiBi and muP (maximal update parametrization).

Defaults from `cerebras/btlm-3b-8k-base` config.json and the Cerebras modelzoo training YAMLs (arXiv 2309.11568;
docs/architectures.md sections 1.1-1.4): 32 layers, width 2560 (32 heads of 80), SwiGLU 6826, LayerNorm 1e-5 with
biases,
biases on every linear layer but the (tied) output head, 8192 context, 50,257 vocab, BOS = EOS = 50256.
muP: base width 256 and base MLP width 682.6 (so both multipliers are 10), embeddings x14.6, output logits
x 2.22 / 10 (the official config.json spells alpha 2.2200000000000003, the same double), attention scores / d, base
init std 0.073.

The published config.json uses GPT-2 names (`n_embd`, `n_layer`, ...) and two spellings of the muP fields; its
table (`config_tables_smallllm.BTLM_CONFIG`, which also writes it back) is read here, so an official folder loads
directly, and the GPT-2 names stay readable as attributes (`config.n_embd`).
"""

from typing import Any

from .config_tables_smallllm import BTLM_CONFIG, read_config_fields
from .configuration_smallllm import SmallLLMConfig


class BTLMConfig(SmallLLMConfig):
    """BTLM-3B-8K: 32 layers, width 2560, 32 heads of 80, SwiGLU 6826, LayerNorm, ALiBi, muP, tied embeddings."""

    model_type = "smallllm_btlm"
    official_model_types = BTLM_CONFIG.model_types
    attribute_map = {**SmallLLMConfig.attribute_map, **BTLM_CONFIG.renamed_fields}

    vocab_size: int = 50257
    hidden_size: int = 2560
    intermediate_size: int = 6826
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    max_position_embeddings: int = 8192
    initializer_range: float = 0.073
    norm_type: str = "layernorm"
    norm_eps: float = 1e-5
    position_embedding_type: str = "alibi"
    attention_bias: bool = True
    attention_out_bias: bool = True
    mlp_bias: bool = True
    tie_word_embeddings: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256
    mup_base_hidden_size: float | None = 256.0
    mup_base_intermediate_size: float | None = 682.6
    mup_embeddings_scale: float = 14.6
    # The official config.json (HF:cerebras/btlm-3b-8k-base) writes 2.2200000000000003: the same IEEE double as
    # 2.22 (both parse to 0x1.1c28f5c28f5c3p+1; Python prints its shortest form, 2.22), so reading and writing
    # config.json in either direction keeps the official value to the last bit (tests/convert/test_btlm_alpha.py).
    mup_output_alpha: float = 2.22
    mup_scale_qk_dot_by_d: bool = True

    def __post_init__(self, **kwargs: Any):
        super().__post_init__(**read_config_fields(self, BTLM_CONFIG, kwargs))


__all__ = ["BTLMConfig"]
