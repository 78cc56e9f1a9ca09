"""GEB-1.3B: a ChatGLM3-derived bilingual model with grouped-query attention and half-rotary, interleaved RoPE.

Defaults from the architecture fields of `GEB-AGI/geb-1.3b` config.json (commit 93e390f; arXiv 2406.09900;
docs/architectures.md section 5.1): 24 layers, width 2048, 16 query heads of size 128 (`kv_channels`), 4 key/value
heads,
SwiGLU 5632, 64,896 embedding rows, 4096 context, untied, no linear biases. Following ChatGLM3 (which GEB refines),
RoPE rotates the first half of each head with adjacent dimensions paired, and the norms are RMSNorm; the special ids
BOS 1 / EOS 2 / PAD 0 are ChatGLM3's (the tail of GEB's final config.json could not be read).

The official config.json uses ChatGLM field names (`num_layers`, `padded_vocab_size`, `ffn_hidden_size`,
`kv_channels`, `layernorm_epsilon`, ...); its table (`config_tables_smallllm.GEB_CONFIG`, which also writes it back) is
read here, so an official folder loads directly.
"""

from typing import Any

from .config_tables_smallllm import GEB_CONFIG, read_config_fields
from .configuration_smallllm import SmallLLMConfig


class GEBConfig(SmallLLMConfig):
    """GEB-1.3B: 24 layers, width 2048, GQA 16/4 with head size 128, half-rotary interleaved RoPE, 64,896 vocab."""

    model_type = "smallllm_geb"
    official_model_types = GEB_CONFIG.model_types

    vocab_size: int = 64896
    hidden_size: int = 2048
    intermediate_size: int = 5632
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_key_value_heads: int | None = 4
    head_dim: int | None = 128
    max_position_embeddings: int = 4096
    norm_eps: float = 1e-5
    rope_layout: str = "interleaved"
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pad_token_id: int | None = 0

    @classmethod
    def _without_official_code(cls, config_dict: dict[str, Any]) -> dict[str, Any]:
        # GEB replaced ChatGLM's `multi_query_attention` / `multi_query_group_num` with `num_key_value_heads`. A
        # "chatglm" file without it is ChatGLM2/3 itself, whose fused `query_key_value` tensors this layout does not
        # read: loading it would leave the attention weights random.
        if config_dict.get("model_type") == "chatglm" and "num_key_value_heads" not in config_dict:
            raise ValueError(
                "this config.json is ChatGLM2/3's (model_type 'chatglm' with multi_query_attention), not GEB's: its "
                "checkpoints fuse query_key_value, which GEBConfig does not read. Load it with its own code "
                "(trust_remote_code=True, without importing hf_smallllm's GEB classes) or transformers' GLM classes.")
        return super()._without_official_code(config_dict)

    def __post_init__(self, **kwargs: Any):
        kwargs = read_config_fields(self, GEB_CONFIG, kwargs)
        # ChatGLM rotates half of each head (`rotary_dim = kv_channels // 2`).
        kwargs.setdefault("partial_rotary_factor", 0.5)
        super().__post_init__(**kwargs)


__all__ = ["GEBConfig"]
