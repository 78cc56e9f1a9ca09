"""GEB-1.3B: a ChatGLM3-derived bilingual model with grouped-query attention and half-rotary, interleaved RoPE.

Defaults from the architecture fields of `GEB-AGI/geb-1.3b` config.json (commit 93e390f; arXiv 2406.09900;
ARCHITECTURES.md section 5.1): 24 layers, width 2048, 16 query heads of size 128 (`kv_channels`), 4 key/value heads,
SwiGLU 5632, 64,896 embedding rows, 4096 context, untied, no linear biases. Following ChatGLM3 (which GEB refines),
RoPE rotates the first half of each head with adjacent dimensions paired, and the norms are RMSNorm; the special ids
BOS 1 / EOS 2 / PAD 0 are ChatGLM3's (the tail of GEB's final config.json could not be read).

The official config.json uses ChatGLM field names (`num_layers`, `padded_vocab_size`, `ffn_hidden_size`,
`kv_channels`, `layernorm_epsilon`, ...); this class reads them, so an official folder loads directly.
"""

from typing import Any

from .configuration_smallllm import SmallLLMConfig


# ChatGLM name -> our field, for fields that are plain renames.
CHATGLM_FIELD_NAMES = {
    "num_layers": "num_hidden_layers",
    "padded_vocab_size": "vocab_size",
    "ffn_hidden_size": "intermediate_size",
    "kv_channels": "head_dim",
    "layernorm_epsilon": "norm_eps",
}
# ChatGLM flags that only change numerics or kernels (fp32 softmax, fused dropout, ...), not the function computed.
CHATGLM_NUMERICS_FLAGS = (
    "seq_length",
    "hidden_dropout",
    "bias_dropout_fusion",
    "use_flash_attn",
    "apply_query_key_layer_scaling",
    "attention_softmax_in_fp32",
    "fp32_residual_connection",
    "prefix_projection",
    "classifier_dropout",
)


class GEBConfig(SmallLLMConfig):
    """GEB-1.3B: 24 layers, width 2048, GQA 16/4 with head size 128, half-rotary interleaved RoPE, 64,896 vocab."""

    model_type = "smallllm_geb"
    official_model_types = ("geblm", "chatglm")

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

    def __post_init__(self, **kwargs: Any):
        kwargs = self._read_chatglm_fields(kwargs)
        # ChatGLM rotates half of each head (`rotary_dim = kv_channels // 2`).
        kwargs.setdefault("partial_rotary_factor", 0.5)
        super().__post_init__(**kwargs)

    def _read_chatglm_fields(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        for official, ours in CHATGLM_FIELD_NAMES.items():
            if official in kwargs:
                setattr(self, ours, kwargs.pop(official))
        for flag in CHATGLM_NUMERICS_FLAGS:
            kwargs.pop(flag, None)
        if kwargs.pop("multi_query_attention", False):
            self.num_key_value_heads = kwargs.pop("multi_query_group_num")
        kwargs.pop("multi_query_group_num", None)
        if "add_bias_linear" in kwargs:
            self.attention_out_bias = self.mlp_bias = bool(kwargs.pop("add_bias_linear"))
        if "add_qkv_bias" in kwargs:
            self.attention_bias = bool(kwargs.pop("add_qkv_bias"))
        if "rmsnorm" in kwargs:
            self.norm_type = "rmsnorm" if kwargs.pop("rmsnorm") else "layernorm"
        if "rope_ratio" in kwargs:  # ChatGLM3-32k style base scaling
            kwargs["rope_theta"] = 10000.0 * kwargs.pop("rope_ratio")
        unsupported = {
            "post_layer_norm": (True, "a final norm after the last layer"),
            "apply_residual_connection_post_layernorm": (False, "pre-norm residual connections"),
            "original_rope": (True, "ChatGLM2/3's original half-rotary RoPE"),
            "pre_seq_len": (None, "no P-tuning prefix"),
        }
        for name, (expected, meaning) in unsupported.items():
            if name in kwargs and kwargs.pop(name) != expected:
                raise ValueError(f"GEB checkpoints with {name} != {expected!r} are not supported (this class implements "
                                 f"{meaning}).")
        return kwargs


__all__ = ["GEBConfig"]
