"""BTLM-3B-8K: a GPT-2-style model with SwiGLU, ALiBi and muP (maximal update parametrization).

Defaults from `cerebras/btlm-3b-8k-base` config.json and the Cerebras modelzoo training YAMLs (arXiv 2309.11568;
ARCHITECTURES.md sections 1.1-1.4): 32 layers, width 2560 (32 heads of 80), SwiGLU 6826, LayerNorm 1e-5 with biases,
biases on every linear layer but the (tied) output head, 8192 context, 50,257 vocab, BOS = EOS = 50256.
muP: base width 256 and base MLP width 682.6 (so both multipliers are 10), embeddings x14.6, output logits
x 2.22 / 10 (the official config.json spells alpha 2.2200000000000003, the same double), attention scores / d, base
init std 0.073.

The published config.json uses GPT-2 names (`n_embd`, `n_layer`, `n_head`, `n_inner`, `n_positions`,
`layer_norm_epsilon`) and two spellings of the muP fields: `mup_embeddings_scale` / `mup_output_alpha` /
`mup_width_scale` / `mup_scale_qk_dot_by_d` (current) and `embeddings_scale` / `output_logits_scale` / `width_scale`
/ `scale_qk_dot_by_d` (before commit eb4f0e4). All of them are read here; the muP base sizes are derived from the
width scale (`mup_base_hidden_size = n_embd * width_scale`), so nothing is typed twice.
"""

from typing import Any

from transformers.utils import logging

from .configuration_smallllm import SmallLLMConfig


logger = logging.get_logger(__name__)

GPT2_FIELD_NAMES = {
    "n_embd": "hidden_size",
    "n_layer": "num_hidden_layers",
    "n_head": "num_attention_heads",
    "n_inner": "intermediate_size",
    "n_positions": "max_position_embeddings",
    "layer_norm_epsilon": "norm_eps",
}
# GPT-2 flags whose published BTLM values are the only ones this implementation computes.
GPT2_REQUIRED_FLAGS = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False}


class BTLMConfig(SmallLLMConfig):
    """BTLM-3B-8K: 32 layers, width 2560, 32 heads of 80, SwiGLU 6826, LayerNorm, ALiBi, muP, tied embeddings."""

    model_type = "smallllm_btlm"
    official_model_types = ("btlm",)
    attribute_map = {**SmallLLMConfig.attribute_map, "layer_norm_epsilon": "norm_eps",
                     **{k: v for k, v in GPT2_FIELD_NAMES.items() if k != "layer_norm_epsilon"}}

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
        kwargs = self._read_gpt2_fields(kwargs)
        kwargs = self._read_mup_spellings(kwargs)
        super().__post_init__(**kwargs)

    def _read_gpt2_fields(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        for official, ours in GPT2_FIELD_NAMES.items():
            if official in kwargs:
                value = kwargs.pop(official)
                if official == "n_inner" and value is None:  # GPT-2 convention: None means 4 x width
                    value = 4 * self.hidden_size
                setattr(self, ours, value)
        activation = kwargs.pop("activation_function", "swiglu")
        if activation != "swiglu":
            raise ValueError(f"activation_function={activation!r}: BTLM's gated MLP needs 'swiglu'.")
        for flag, expected in GPT2_REQUIRED_FLAGS.items():
            if flag in kwargs and kwargs.pop(flag) != expected:
                raise ValueError(f"{flag} != {expected} is not supported by BTLMConfig.")
        kwargs.pop("reorder_and_upcast_attn", None)  # only changes the dtype of the score computation
        if "attn_pdrop" in kwargs:
            self.attention_dropout = kwargs.pop("attn_pdrop")
        for name in ("embd_pdrop", "resid_pdrop"):
            if kwargs.pop(name, 0.0):
                logger.warning("%s is ignored: hf_smallllm models have no embedding or residual dropout.", name)
        return kwargs

    def _read_mup_spellings(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if "embeddings_scale" in kwargs:
            self.mup_embeddings_scale = kwargs.pop("embeddings_scale")
        if "scale_qk_dot_by_d" in kwargs:
            self.mup_scale_qk_dot_by_d = kwargs.pop("scale_qk_dot_by_d")
        width_scale = kwargs.pop("mup_width_scale", None)
        legacy_width_scale = kwargs.pop("width_scale", None)
        width_scale = width_scale if width_scale is not None else legacy_width_scale
        output_logits_scale = kwargs.pop("output_logits_scale", None)  # legacy: already alpha x width_scale
        if width_scale is not None:
            if not width_scale > 0:
                raise ValueError(f"mup_width_scale={width_scale!r} must be positive.")
            self.mup_base_hidden_size = self.hidden_size * width_scale
            self.mup_base_intermediate_size = self.intermediate_size * width_scale
            if output_logits_scale is not None:
                self.mup_output_alpha = output_logits_scale / width_scale
        elif output_logits_scale is not None:
            # Without a width scale the multiplier is the whole story: a base width equal to the width.
            self.mup_base_hidden_size = float(self.hidden_size)
            self.mup_base_intermediate_size = float(self.intermediate_size)
            self.mup_output_alpha = output_logits_scale
        return kwargs


__all__ = ["BTLMConfig"]
