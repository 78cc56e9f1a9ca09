"""Declarative key tables: one per foreign layout, each rule mapping one foreign tensor to the package tensors it holds.

A rule reads "foreign key -> package key(s) by a named transform" (see `transforms.py`); `{layer}` stands for the
block index. Tables are written in the import direction; export runs the same rules backwards. A rule whose package
keys a config does not have (biases of a bias-free model, the head of a tied model) is inactive for that config, so
one table serves every variant of a layout. Besides rules, a table names:

- `derived`: foreign tensors that are functions of the config, not learned (BTLM's stored ALiBi slopes): written on
  export, and on import checked against the config (a mismatch is an error: the package would compute other values);
- `dropped`: foreign buffers ignored on import because the package recomputes them (RoPE `inv_freq`).

Names come from ARCHITECTURES.md: BTLM 1.3, GEB 5.2, lit-gpt 3.3; the Llama names are transformers' own and are the
package's (TinyLlama, ChuXin and Skywork publish them). GLM is transformers' `GlmForCausalLM`, the native model for
GEB-shaped checkpoints (fused `gate_up_proj`, gate first).

`official_layouts.py` holds the same BTLM and GEB facts as transformers `WeightConverter`s for conversion on load;
`tests/convert` checks that both give bitwise-identical tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class KeyRule:
    """One foreign tensor and the package tensor(s) it holds."""

    source: str
    targets: tuple[str, ...]
    transform: str = "identity"


@dataclass(frozen=True)
class DerivedTensor:
    """A foreign tensor computed from the config (`compute` names a function in `derived.py`)."""

    key: str
    compute: str


@dataclass(frozen=True)
class KeyTable:
    """All the rules of one foreign layout (foreign -> package)."""

    name: str
    rules: tuple[KeyRule, ...]
    derived: tuple[DerivedTensor, ...] = ()
    dropped: tuple[str, ...] = field(default=())  # regular expressions over foreign keys


def _rule(source: str, *targets: str, transform: str = "identity") -> KeyRule:
    return KeyRule(source, tuple(targets), transform)


_LAYER = "model.layers.{layer}."

# transformers' Llama names, which are the package's: every rule is the identity.
LLAMA_KEYS = (
    "model.embed_tokens.weight",
    _LAYER + "input_layernorm.weight",
    _LAYER + "self_attn.q_proj.weight",
    _LAYER + "self_attn.q_proj.bias",
    _LAYER + "self_attn.k_proj.weight",
    _LAYER + "self_attn.k_proj.bias",
    _LAYER + "self_attn.v_proj.weight",
    _LAYER + "self_attn.v_proj.bias",
    _LAYER + "self_attn.o_proj.weight",
    _LAYER + "self_attn.o_proj.bias",
    _LAYER + "post_attention_layernorm.weight",
    _LAYER + "mlp.gate_proj.weight",
    _LAYER + "mlp.gate_proj.bias",
    _LAYER + "mlp.up_proj.weight",
    _LAYER + "mlp.up_proj.bias",
    _LAYER + "mlp.down_proj.weight",
    _LAYER + "mlp.down_proj.bias",
    "model.norm.weight",
    "lm_head.weight",
)

LLAMA = KeyTable(
    name="llama",
    rules=tuple(_rule(key, key) for key in LLAMA_KEYS),
    # checkpoints saved by transformers < 4.31 carry the rotary table of every layer
    dropped=(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",),
)

_BTLM = "transformer.h.{layer}."
BTLM_OFFICIAL = KeyTable(
    name="btlm-official",
    rules=(
        _rule("transformer.wte.weight", "model.embed_tokens.weight"),
        _rule(_BTLM + "ln_1.weight", _LAYER + "input_layernorm.weight"),
        _rule(_BTLM + "ln_1.bias", _LAYER + "input_layernorm.bias"),
        # Conv1D [in, 3 * hidden], columns q | k | v
        _rule(_BTLM + "attn.c_attn.weight", _LAYER + "self_attn.q_proj.weight", _LAYER + "self_attn.k_proj.weight",
              _LAYER + "self_attn.v_proj.weight", transform="transpose_split_rows"),
        _rule(_BTLM + "attn.c_attn.bias", _LAYER + "self_attn.q_proj.bias", _LAYER + "self_attn.k_proj.bias",
              _LAYER + "self_attn.v_proj.bias", transform="split_rows"),
        _rule(_BTLM + "attn.c_proj.weight", _LAYER + "self_attn.o_proj.weight", transform="transpose"),
        _rule(_BTLM + "attn.c_proj.bias", _LAYER + "self_attn.o_proj.bias"),
        _rule(_BTLM + "ln_2.weight", _LAYER + "post_attention_layernorm.weight"),
        _rule(_BTLM + "ln_2.bias", _LAYER + "post_attention_layernorm.bias"),
        # SiLU goes on c_fc2, so c_fc2 is the gate and c_fc the up projection (ARCHITECTURES.md 1.4)
        _rule(_BTLM + "mlp.c_fc.weight", _LAYER + "mlp.up_proj.weight", transform="transpose"),
        _rule(_BTLM + "mlp.c_fc.bias", _LAYER + "mlp.up_proj.bias"),
        _rule(_BTLM + "mlp.c_fc2.weight", _LAYER + "mlp.gate_proj.weight", transform="transpose"),
        _rule(_BTLM + "mlp.c_fc2.bias", _LAYER + "mlp.gate_proj.bias"),
        _rule(_BTLM + "mlp.c_proj.weight", _LAYER + "mlp.down_proj.weight", transform="transpose"),
        _rule(_BTLM + "mlp.c_proj.bias", _LAYER + "mlp.down_proj.bias"),
        _rule("transformer.ln_f.weight", "model.norm.weight"),
        _rule("transformer.ln_f.bias", "model.norm.bias"),
        # BTLM ties the head to `wte`; a file that stores it anyway must hold the same values
        _rule("lm_head.weight", "lm_head.weight"),
    ),
    derived=(DerivedTensor("transformer.relative_pe.slopes", "alibi_slopes"),),
)

_GEB = "transformer.encoder.layers.{layer}."
GEB_OFFICIAL = KeyTable(
    name="geb-official",
    rules=(
        _rule("transformer.embedding.word_embeddings.weight", "model.embed_tokens.weight"),
        _rule(_GEB + "input_layernorm.weight", _LAYER + "input_layernorm.weight"),
        _rule(_GEB + "input_layernorm.bias", _LAYER + "input_layernorm.bias"),
        _rule(_GEB + "self_attention.query.weight", _LAYER + "self_attn.q_proj.weight"),
        _rule(_GEB + "self_attention.query.bias", _LAYER + "self_attn.q_proj.bias"),
        # all K heads, then all V heads
        _rule(_GEB + "self_attention.key_value.weight", _LAYER + "self_attn.k_proj.weight",
              _LAYER + "self_attn.v_proj.weight", transform="split_rows"),
        _rule(_GEB + "self_attention.key_value.bias", _LAYER + "self_attn.k_proj.bias",
              _LAYER + "self_attn.v_proj.bias", transform="split_rows"),
        _rule(_GEB + "self_attention.dense.weight", _LAYER + "self_attn.o_proj.weight"),
        _rule(_GEB + "self_attention.dense.bias", _LAYER + "self_attn.o_proj.bias"),
        _rule(_GEB + "post_attention_layernorm.weight", _LAYER + "post_attention_layernorm.weight"),
        _rule(_GEB + "post_attention_layernorm.bias", _LAYER + "post_attention_layernorm.bias"),
        # SwiGLU halves: SiLU(first) * second
        _rule(_GEB + "mlp.dense_h_to_4h.weight", _LAYER + "mlp.gate_proj.weight", _LAYER + "mlp.up_proj.weight",
              transform="split_rows"),
        _rule(_GEB + "mlp.dense_h_to_4h.bias", _LAYER + "mlp.gate_proj.bias", _LAYER + "mlp.up_proj.bias",
              transform="split_rows"),
        _rule(_GEB + "mlp.dense_4h_to_h.weight", _LAYER + "mlp.down_proj.weight"),
        _rule(_GEB + "mlp.dense_4h_to_h.bias", _LAYER + "mlp.down_proj.bias"),
        _rule("transformer.encoder.final_layernorm.weight", "model.norm.weight"),
        _rule("transformer.encoder.final_layernorm.bias", "model.norm.bias"),
        _rule("transformer.output_layer.weight", "lm_head.weight"),
    ),
    # ChatGLM keeps its RoPE frequencies as a persistent buffer; the package derives them from the config
    dropped=(r"transformer\.rotary_pos_emb\.inv_freq",),
)

_LIT = "transformer.h.{layer}."
LITGPT = KeyTable(
    name="litgpt",
    rules=(
        _rule("transformer.wte.weight", "model.embed_tokens.weight"),
        _rule(_LIT + "norm_1.weight", _LAYER + "input_layernorm.weight"),
        _rule(_LIT + "attn.attn.weight", _LAYER + "self_attn.q_proj.weight", _LAYER + "self_attn.k_proj.weight",
              _LAYER + "self_attn.v_proj.weight", transform="grouped_qkv"),
        _rule(_LIT + "attn.attn.bias", _LAYER + "self_attn.q_proj.bias", _LAYER + "self_attn.k_proj.bias",
              _LAYER + "self_attn.v_proj.bias", transform="grouped_qkv"),
        _rule(_LIT + "attn.proj.weight", _LAYER + "self_attn.o_proj.weight"),
        _rule(_LIT + "attn.proj.bias", _LAYER + "self_attn.o_proj.bias"),
        _rule(_LIT + "norm_2.weight", _LAYER + "post_attention_layernorm.weight"),
        # xformers SwiGLU: w3(silu(w1 x) * w2 x)
        _rule(_LIT + "mlp.swiglu.w1.weight", _LAYER + "mlp.gate_proj.weight"),
        _rule(_LIT + "mlp.swiglu.w2.weight", _LAYER + "mlp.up_proj.weight"),
        _rule(_LIT + "mlp.swiglu.w3.weight", _LAYER + "mlp.down_proj.weight"),
        _rule("transformer.ln_f.weight", "model.norm.weight"),
        _rule("lm_head.weight", "lm_head.weight"),
    ),
)

GLM = KeyTable(
    name="glm",
    rules=tuple(
        _rule(key, key) for key in LLAMA_KEYS if ".mlp.gate_proj." not in key and ".mlp.up_proj." not in key
    ) + (
        _rule(_LAYER + "mlp.gate_up_proj.weight", _LAYER + "mlp.gate_proj.weight", _LAYER + "mlp.up_proj.weight",
              transform="split_rows"),
    ),
)

# GEB's official layout read into GlmForCausalLM directly (not through the package), so that the logit check of a
# GEB import runs the source tensors in an implementation that shares nothing with the GEB_OFFICIAL table but the
# key/value split. Package names here are GLM's.
GEB_OFFICIAL_AS_GLM = KeyTable(
    name="geb-official-as-glm",
    rules=tuple(
        rule for rule in GEB_OFFICIAL.rules if ".mlp.dense_h_to_4h." not in rule.source
    ) + (
        _rule(_GEB + "mlp.dense_h_to_4h.weight", _LAYER + "mlp.gate_up_proj.weight"),
    ),
    dropped=GEB_OFFICIAL.dropped,
)


__all__ = [
    "BTLM_OFFICIAL",
    "GEB_OFFICIAL",
    "GEB_OFFICIAL_AS_GLM",
    "GLM",
    "LITGPT",
    "LLAMA",
    "DerivedTensor",
    "KeyRule",
    "KeyTable",
]
