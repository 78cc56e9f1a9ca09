"""Every foreign checkpoint layout, declared once: one `Layout` per layout, the registry the package reads them from.

A layout holds what it *is*: its tensor names (`{layer}` stands for the block index) and which package tensors each
one holds through a named tensor transform, the tensors it stores that the package drops or derives, its config.json
(a `ConfigTable` of `hf_smallllm.models.config_tables_smallllm`: keys, config transforms, `model_type` strings), and
what it cannot express (`Requirement`s). Everything else is generated from the tables:

- transformers' on-load `WeightRenaming`s / `WeightConverter`s (`weight_transforms`, registered by
  `hf_smallllm.families.register`), so `BTLMForCausalLM.from_pretrained(official_folder)` converts on load;
- reading an official config.json (`read_config_fields`, called by the BTLM and GEB config classes, and by
  `hf_smallllm.convert.configs` for Llama-named files);
- the converter's key tables (`hf_smallllm.convert.plan` expands `tensors` per layer and runs their transforms)
  and writing config.json (`hf_smallllm.convert.configs.write_config`).

Only the config tables ship as remote code (the config classes read official config.json files through them); this
module does not ship, so a saved checkpoint carries no tensor tables. It sits beside `families` in the layering: the
families name their layouts, and `register()` installs the on-load conversions generated here. Each tensor transform
is one object here that converts both ways on tensors (the converter, `convert.plan`) and gives transformers' on-load
operations (`weight_transforms`).

Sources of the facts: docs/architectures.md 1.3 (BTLM), 5.2 (GEB / ChatGLM3), 3.3 (lit-gpt); the Llama names are
transformers' own and the package's (TinyLlama, ChuXin and Skywork publish them); GLM is transformers'
`GlmForCausalLM`, the native model for GEB-shaped checkpoints (fused `gate_up_proj`, gate first). GPT-2 `Conv1D`
stores [in, out] (1.3); BTLM's `c_attn` columns are q | k | v (1.3); ChatGLM's `key_value` rows are all K heads then
all V heads and `dense_h_to_4h` is gate then up (5.2); lit-gpt's fused `attn.attn` rows are grouped per key/value head
as [that group's q heads | its k head | its v head] (3.3, `lit_gpt/model.py` views the output as (groups,
q_per_kv + 2, head_size)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .models.config_tables_smallllm import (
    BTLM_CONFIG,
    GEB_CONFIG,
    LLAMA_CONFIG,
    SKYWORK_CONFIG,
    ConfigField,
    ConfigTable,
)

LAYER = "model.layers.{layer}."
DEFAULT_ROPE_THETA = 10000.0


# ------------------------------------------------------------------------------------------------ tensor transforms
class TensorTransform:
    """How one foreign tensor becomes package tensors and back, and what transformers does on load instead.

    `to_package` splits or reorders a foreign tensor into package tensors of the given shapes; `from_package` is its
    exact inverse (pure data movement, no arithmetic), which is what makes round trips bitwise. The shape a foreign
    tensor must have is `from_package` applied to meta tensors of the expected package shapes, so no table repeats a
    size. `on_load` gives transformers' `ConversionOps` doing `to_package` while `from_pretrained` loads (a fresh list
    per call: transformers mutates them), or None where transformers has no equivalent."""

    name = "identity"

    def to_package(self, fused: torch.Tensor, shapes: Sequence[torch.Size], config) -> list[torch.Tensor]:
        return [fused]

    def from_package(self, parts: Sequence[torch.Tensor], config) -> torch.Tensor:
        return parts[0]

    def on_load(self) -> list | None:
        return []

    def __repr__(self) -> str:
        return self.name


class _Transpose(TensorTransform):
    """GPT-2 `Conv1D` weight [in, out] <-> nn.Linear weight [out, in]."""

    name = "transpose"

    def to_package(self, fused, shapes, config):
        return [fused.t()]

    def from_package(self, parts, config):
        return parts[0].t()

    def on_load(self):
        from transformers.core_model_loading import Transpose

        return [Transpose(0, 1)]


class _SplitRows(TensorTransform):
    """Tensors stacked along dim 0 (output features), in the order of the table's targets. On load, transformers
    cuts equal parts: q/k/v of a multi-head model, k/v, gate/up."""

    name = "split_rows"

    def to_package(self, fused, shapes, config):
        return list(torch.split(fused, [shape[0] for shape in shapes], dim=0))

    def from_package(self, parts, config):
        return torch.cat(list(parts), dim=0)

    def on_load(self):
        from transformers.core_model_loading import Chunk

        return [Chunk(dim=0)]


class _TransposeSplitRows(TensorTransform):
    """A `Conv1D` weight [in, sum(out)] whose output columns stack several projections (BTLM's `c_attn`)."""

    name = "transpose_split_rows"

    def to_package(self, fused, shapes, config):
        return SPLIT_ROWS.to_package(fused.t(), shapes, config)

    def from_package(self, parts, config):
        return SPLIT_ROWS.from_package(parts, config).t()

    def on_load(self):
        return TRANSPOSE.on_load() + SPLIT_ROWS.on_load()


class _GroupedQKV(TensorTransform):
    """lit-gpt's fused QKV: per key/value group, that group's query heads, then one key head, then one value head.
    Works for weights [rows, in] and biases [rows]. Query head h belongs to group h // (heads / kv_heads), the same
    grouping as transformers' `repeat_kv`, so no head is reordered across groups. lit-gpt checkpoints have no
    config.json, so nothing loads them with `from_pretrained`: no on-load equivalent."""

    name = "grouped_qkv"

    def to_package(self, fused, shapes, config):
        groups, q_per_kv, head_dim = _group_sizes(config)
        trailing = fused.shape[1:]
        blocks = fused.reshape(groups, q_per_kv + 2, head_dim, *trailing)  # [groups, q_per_kv + 2, head_dim, ...]
        q = blocks[:, :q_per_kv].reshape(groups * q_per_kv * head_dim, *trailing)
        k = blocks[:, q_per_kv].reshape(groups * head_dim, *trailing)
        v = blocks[:, q_per_kv + 1].reshape(groups * head_dim, *trailing)
        return [q, k, v]

    def from_package(self, parts, config):
        groups, q_per_kv, head_dim = _group_sizes(config)
        q, k, v = parts
        trailing = q.shape[1:]
        q = q.reshape(groups, q_per_kv, head_dim, *trailing)
        k = k.reshape(groups, 1, head_dim, *trailing)
        v = v.reshape(groups, 1, head_dim, *trailing)
        return torch.cat([q, k, v], dim=1).reshape(groups * (q_per_kv + 2) * head_dim, *trailing)

    def on_load(self):
        return None


def _group_sizes(config) -> tuple[int, int, int]:
    groups = config.num_key_value_heads
    return groups, config.num_attention_heads // groups, config.head_dim


IDENTITY = TensorTransform()
TRANSPOSE = _Transpose()
SPLIT_ROWS = _SplitRows()
TRANSPOSE_SPLIT_ROWS = _TransposeSplitRows()
GROUPED_QKV = _GroupedQKV()
# every tensor transform, by name (messages, tests)
TENSOR_TRANSFORMS: dict[str, TensorTransform] = {t.name: t for t in (
    IDENTITY, TRANSPOSE, SPLIT_ROWS, TRANSPOSE_SPLIT_ROWS, GROUPED_QKV)}


# ------------------------------------------------------------------------------------------------------- the types
@dataclass(frozen=True)
class TensorRule:
    """One foreign tensor and the package tensor(s) it holds, through a tensor transform (below)."""

    source: str
    targets: tuple[str, ...]
    transform: TensorTransform = IDENTITY


@dataclass(frozen=True)
class DerivedTensor:
    """A foreign tensor that a rule carries but a checkpoint may lack, and the function of the config that stands in
    for it then (`compute` names a function in `hf_smallllm.convert.plan.DERIVED_TENSORS`): BTLM's ALiBi slopes are
    converted as stored both ways, and computed for a checkpoint that has none (a package checkpoint saved before the
    package stored them)."""

    key: str
    compute: str


@dataclass(frozen=True)
class Requirement:
    """A quantity of the package config (an attribute, or a name in `QUANTITIES`) that the layout can store only
    with one of `allowed` values; writing a config outside them is refused with `why`."""

    quantity: str
    allowed: tuple
    why: str


@dataclass(frozen=True)
class Layout:
    """One foreign layout (see the module docstring)."""

    name: str
    title: str  # for messages: "the {title} layout cannot express ..."
    tensors: tuple[TensorRule, ...]
    dropped: tuple[str, ...] = ()  # regular expressions over foreign keys: buffers the package recomputes
    derived: tuple[DerivedTensor, ...] = ()
    config_table: ConfigTable = ConfigTable()  # its config.json (none: lit-gpt checkpoints have no config)
    loads_into: tuple[str, ...] = ()  # package model_types whose `from_pretrained` converts this layout on load
    requires: tuple[Requirement, ...] = ()
    native_class: str | None = None  # the transformers class whose native format this is ("LlamaForCausalLM")
    remote_code: str | None = None  # where the official modeling code named by its config.json's auto_map lives
    config_read_by_class: bool = False  # the family's config class reads its config.json (else via LlamaConfig)
    # what computes logits from a checkpoint in this layout for the logit check (`convert.formats.RUNNERS`)
    runner: str = ""

    @property
    def config(self) -> tuple[ConfigField, ...]:
        return self.config_table.config

    @property
    def model_types(self) -> tuple[str, ...]:  # `model_type` of its config.json (official layouts)
        return self.config_table.model_types

    @property
    def renamed_fields(self) -> dict[str, str]:
        return self.config_table.renamed_fields


def _rule(source: str, *targets: str, transform: TensorTransform = IDENTITY) -> TensorRule:
    return TensorRule(source, tuple(targets), transform)


# ------------------------------------------------------------------------------------------- derived quantities
def _rope_type(config):
    if config.position_embedding_type != "rope":
        return None
    return (config.rope_parameters or {}).get("rope_type", "default")


def _one_mup_width_scale(config) -> bool:
    return not config.uses_mup or math.isclose(config.mup_ffn_multiplier, config.mup_width_multiplier, rel_tol=1e-9)


# name -> config -> value, for requirements on what is not a plain attribute
QUANTITIES = {
    "rope_type": _rope_type,
    "rotary_fraction": lambda c: c.rotary_dim / c.head_dim if c.position_embedding_type == "rope" else None,
    "head_dim_is_width_over_heads": lambda c: c.head_dim * c.num_attention_heads == c.hidden_size,
    "multi_head": lambda c: c.num_key_value_heads == c.num_attention_heads,
    "qkv_bias_is_output_bias": lambda c: c.attention_bias == c.attention_out_bias,
    "output_bias_is_mlp_bias": lambda c: c.attention_out_bias == c.mlp_bias,
    "every_linear_has_bias": lambda c: bool(c.attention_bias and c.attention_out_bias and c.mlp_bias),
    "any_linear_bias": lambda c: bool(c.attention_bias or c.attention_out_bias or c.mlp_bias),
    "output_logits_multiplier_is_1": lambda c: math.isclose(c.output_logits_multiplier, 1.0, rel_tol=1e-12),
    "one_mup_width_scale": _one_mup_width_scale,
}


def quantity(config, name: str):
    return QUANTITIES[name](config) if name in QUANTITIES else getattr(config, name)


def implied_fields(layout: Layout) -> dict[str, Any]:
    """The config fields a layout cannot vary (its single-valued requirements on plain fields): what reading a config
    of that layout implies (Llama: RoPE, the half layout, RMSNorm, no muP score scaling)."""
    return {r.quantity: r.allowed[0] for r in layout.requires if len(r.allowed) == 1 and r.quantity not in QUANTITIES}


def unmet_requirements(config, layout: Layout) -> list[str]:
    """Every requirement of `layout` that `config` breaks, as `name=value (why)`; empty when it can be written."""
    reasons = []
    for requirement in layout.requires:
        value = quantity(config, requirement.quantity)
        if value not in requirement.allowed:
            reasons.append(f"{requirement.quantity}={value!r} ({requirement.why})")
    return reasons


# ------------------------------------------------------------------------------------------------------ the tables
_LLAMA_TENSORS = (
    "model.embed_tokens.weight",
    LAYER + "input_layernorm.weight",
    LAYER + "self_attn.q_proj.weight",
    LAYER + "self_attn.q_proj.bias",
    LAYER + "self_attn.k_proj.weight",
    LAYER + "self_attn.k_proj.bias",
    LAYER + "self_attn.v_proj.weight",
    LAYER + "self_attn.v_proj.bias",
    LAYER + "self_attn.o_proj.weight",
    LAYER + "self_attn.o_proj.bias",
    LAYER + "post_attention_layernorm.weight",
    LAYER + "mlp.gate_proj.weight",
    LAYER + "mlp.gate_proj.bias",
    LAYER + "mlp.up_proj.weight",
    LAYER + "mlp.up_proj.bias",
    LAYER + "mlp.down_proj.weight",
    LAYER + "mlp.down_proj.bias",
    "model.norm.weight",
    "lm_head.weight",
)

# What muP adds that plain Llama/GLM/ChatGLM/Skywork configs have no field for.
_NO_MUP = (
    Requirement("mup_embeddings_scale", (1.0, 1), "the layout has no embedding multiplier"),
    Requirement("output_logits_multiplier_is_1", (True,), "muP's output logit multiplier; the layout has none"),
    Requirement("mup_scale_qk_dot_by_d", (False,), "the layout scales attention scores by 1/sqrt(head_dim)"),
)
_RMSNORM = Requirement("norm_type", ("rmsnorm",), "the layout uses RMSNorm")
_ROPE = Requirement("position_embedding_type", ("rope",), "the layout uses RoPE")

# transformers' LlamaConfig names (TinyLlama's and ChuXin's config.json, and the native export): the keyword
# arguments of `LlamaConfig` (`convert.configs.native_config`) and, through a LlamaConfig that normalises legacy rope
# fields, what a Llama-named config.json says (`convert.configs.read_llama_named`). What Llama cannot vary (its
# single-valued requirements: RoPE, half layout, RMSNorm) is what reading it implies.
LLAMA = Layout(
    name="llama",
    title="Llama",
    native_class="LlamaForCausalLM",
    runner="transformers LlamaForCausalLM",
    # the package's own names: every rule is the identity
    tensors=tuple(_rule(key, key) for key in _LLAMA_TENSORS),
    # checkpoints saved by transformers < 4.31 carry the rotary table of every layer
    dropped=(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",),
    config_table=LLAMA_CONFIG,
    requires=(
        _ROPE,
        Requirement("rope_layout", ("half",), "Llama pairs dimensions i and i + d/2"),
        Requirement("rotary_fraction", (1.0, None), "Llama rotates every dimension of a head"),
        *_NO_MUP,
        _RMSNORM,
        Requirement("qkv_bias_is_output_bias", (True,), "Llama's attention_bias covers q, k, v and o together"),
    ),
)

# Skywork's remote-code config.json: Llama weights, transformers 4.33 config names (HF:Skywork/Skywork-13B-base).
SKYWORK_OFFICIAL = Layout(
    name="skywork-official",
    title="Skywork official",
    remote_code="https://huggingface.co/Skywork/Skywork-13B-base",
    runner="transformers LlamaForCausalLM",  # the same math as Skywork's remote code
    tensors=LLAMA.tensors,
    dropped=LLAMA.dropped,
    config_table=SKYWORK_CONFIG,
    requires=(
        *LLAMA.requires,
        Requirement("any_linear_bias", (False,), "Skywork's remote code has no linear biases"),
        Requirement("head_dim_is_width_over_heads", (True,), "Skywork derives head_dim = hidden_size / heads"),
        Requirement("rope_type", ("default", "linear", "dynamic"),
                    "Skywork's remote code knows linear and dynamic scaling"),
    ),
)

_BTLM = "transformer.h.{layer}."
# BTLM (`BTLMLMHeadModel`): GPT-2 module tree, `Conv1D` weights stored [in, out], fused q|k|v with biases, SiLU on
# `c_fc2` (our gate) times `c_fc` (our up), tied output head (absent from the file). config.json: GPT-2 names and two
# spellings of the muP fields (current `mup_*`, and the names before commit eb4f0e4).
BTLM_OFFICIAL = Layout(
    name="btlm-official",
    title="BTLM official",
    remote_code="https://huggingface.co/cerebras/btlm-3b-8k-base",
    config_read_by_class=True,
    runner="BTLM reference forward on the official tensors",
    tensors=(
        _rule("transformer.wte.weight", "model.embed_tokens.weight"),
        _rule(_BTLM + "ln_1.weight", LAYER + "input_layernorm.weight"),
        _rule(_BTLM + "ln_1.bias", LAYER + "input_layernorm.bias"),
        # Conv1D [in, 3 * hidden], columns q | k | v
        _rule(_BTLM + "attn.c_attn.weight", LAYER + "self_attn.q_proj.weight", LAYER + "self_attn.k_proj.weight",
              LAYER + "self_attn.v_proj.weight", transform=TRANSPOSE_SPLIT_ROWS),
        _rule(_BTLM + "attn.c_attn.bias", LAYER + "self_attn.q_proj.bias", LAYER + "self_attn.k_proj.bias",
              LAYER + "self_attn.v_proj.bias", transform=SPLIT_ROWS),
        _rule(_BTLM + "attn.c_proj.weight", LAYER + "self_attn.o_proj.weight", transform=TRANSPOSE),
        _rule(_BTLM + "attn.c_proj.bias", LAYER + "self_attn.o_proj.bias"),
        _rule(_BTLM + "ln_2.weight", LAYER + "post_attention_layernorm.weight"),
        _rule(_BTLM + "ln_2.bias", LAYER + "post_attention_layernorm.bias"),
        # SiLU goes on c_fc2, so c_fc2 is the gate and c_fc the up projection (docs/architectures.md 1.4)
        _rule(_BTLM + "mlp.c_fc.weight", LAYER + "mlp.up_proj.weight", transform=TRANSPOSE),
        _rule(_BTLM + "mlp.c_fc.bias", LAYER + "mlp.up_proj.bias"),
        _rule(_BTLM + "mlp.c_fc2.weight", LAYER + "mlp.gate_proj.weight", transform=TRANSPOSE),
        _rule(_BTLM + "mlp.c_fc2.bias", LAYER + "mlp.gate_proj.bias"),
        _rule(_BTLM + "mlp.c_proj.weight", LAYER + "mlp.down_proj.weight", transform=TRANSPOSE),
        _rule(_BTLM + "mlp.c_proj.bias", LAYER + "mlp.down_proj.bias"),
        _rule("transformer.ln_f.weight", "model.norm.weight"),
        _rule("transformer.ln_f.bias", "model.norm.bias"),
        # BTLM ties the head to `wte`; a file that stores it anyway must hold the same values
        _rule("lm_head.weight", "lm_head.weight"),
        # [heads, 1]; the official forward uses the stored values (rounded, in a bf16 checkpoint), and so do we
        _rule("transformer.relative_pe.slopes", "model.alibi.slopes"),
    ),
    derived=(DerivedTensor("transformer.relative_pe.slopes", "alibi_slopes"),),
    loads_into=("smallllm_btlm",),
    config_table=BTLM_CONFIG,
    requires=(
        Requirement("position_embedding_type", ("alibi",), "this layout has ALiBi only"),
        Requirement("norm_type", ("layernorm",), "BTLM uses LayerNorm with bias"),
        Requirement("every_linear_has_bias", (True,), "GPT-2 Conv1D layers always have one"),
        Requirement("tie_word_embeddings", (True,), "BTLM's head is the embedding"),
        Requirement("multi_head", (True,), "BTLM's fused c_attn is multi-head"),
        Requirement("head_dim_is_width_over_heads", (True,), "BTLM derives head_dim = n_embd / n_head"),
        Requirement("hidden_act", ("silu",), "BTLM's activation_function is swiglu"),
        Requirement("one_mup_width_scale", (True,), "BTLM's config has one mup_width_scale for the width and MLP"),
    ),
)

_GEB = "transformer.encoder.layers.{layer}."
# GEB (`GEBForCausalLM`, ChatGLM3 tree): separate `query`, fused `key_value` (all K heads, then all V heads), fused
# `dense_h_to_4h` (gate half, then up half), untied `output_layer`. config.json: ChatGLM3 names (commit 93e390f).
GEB_OFFICIAL = Layout(
    name="geb-official",
    title="GEB official",
    remote_code="https://huggingface.co/GEB-AGI/geb-1.3b",
    config_read_by_class=True,
    runner="transformers GlmForCausalLM on the official tensors",
    tensors=(
        _rule("transformer.embedding.word_embeddings.weight", "model.embed_tokens.weight"),
        _rule(_GEB + "input_layernorm.weight", LAYER + "input_layernorm.weight"),
        _rule(_GEB + "input_layernorm.bias", LAYER + "input_layernorm.bias"),
        _rule(_GEB + "self_attention.query.weight", LAYER + "self_attn.q_proj.weight"),
        _rule(_GEB + "self_attention.query.bias", LAYER + "self_attn.q_proj.bias"),
        # all K heads, then all V heads
        _rule(_GEB + "self_attention.key_value.weight", LAYER + "self_attn.k_proj.weight",
              LAYER + "self_attn.v_proj.weight", transform=SPLIT_ROWS),
        _rule(_GEB + "self_attention.key_value.bias", LAYER + "self_attn.k_proj.bias",
              LAYER + "self_attn.v_proj.bias", transform=SPLIT_ROWS),
        _rule(_GEB + "self_attention.dense.weight", LAYER + "self_attn.o_proj.weight"),
        _rule(_GEB + "self_attention.dense.bias", LAYER + "self_attn.o_proj.bias"),
        _rule(_GEB + "post_attention_layernorm.weight", LAYER + "post_attention_layernorm.weight"),
        _rule(_GEB + "post_attention_layernorm.bias", LAYER + "post_attention_layernorm.bias"),
        # SwiGLU halves: SiLU(first) * second
        _rule(_GEB + "mlp.dense_h_to_4h.weight", LAYER + "mlp.gate_proj.weight", LAYER + "mlp.up_proj.weight",
              transform=SPLIT_ROWS),
        _rule(_GEB + "mlp.dense_h_to_4h.bias", LAYER + "mlp.gate_proj.bias", LAYER + "mlp.up_proj.bias",
              transform=SPLIT_ROWS),
        _rule(_GEB + "mlp.dense_4h_to_h.weight", LAYER + "mlp.down_proj.weight"),
        _rule(_GEB + "mlp.dense_4h_to_h.bias", LAYER + "mlp.down_proj.bias"),
        _rule("transformer.encoder.final_layernorm.weight", "model.norm.weight"),
        _rule("transformer.encoder.final_layernorm.bias", "model.norm.bias"),
        _rule("transformer.output_layer.weight", "lm_head.weight"),
    ),
    # ChatGLM keeps its RoPE frequencies as a persistent buffer; the package derives them from the config
    dropped=(r"transformer\.rotary_pos_emb\.inv_freq",),
    loads_into=("smallllm_geb",),
    config_table=GEB_CONFIG,
    requires=(
        _ROPE,
        Requirement("rope_layout", ("interleaved",), "ChatGLM pairs dimensions 2i and 2i + 1"),
        Requirement("rotary_fraction", (0.5,), "ChatGLM rotates half of each head"),
        *_NO_MUP,
        Requirement("rope_type", ("default",), "ChatGLM only scales the RoPE base, rope_ratio"),
        Requirement("output_bias_is_mlp_bias", (True,), "ChatGLM's add_bias_linear covers both"),
        Requirement("tie_word_embeddings", (False,), "ChatGLM has a separate output_layer"),
        Requirement("hidden_act", ("silu",), "ChatGLM's MLP is SwiGLU"),
    ),
)

_LIT = "transformer.h.{layer}."
# lit-gpt training checkpoints (TinyLlama's `iter-XXXXXX-ckpt.pth`): no config.json, the config comes from a preset.
LITGPT = Layout(
    name="litgpt",
    title="lit-gpt",
    runner="lit-gpt reference forward on the checkpoint tensors",
    tensors=(
        _rule("transformer.wte.weight", "model.embed_tokens.weight"),
        _rule(_LIT + "norm_1.weight", LAYER + "input_layernorm.weight"),
        _rule(_LIT + "attn.attn.weight", LAYER + "self_attn.q_proj.weight", LAYER + "self_attn.k_proj.weight",
              LAYER + "self_attn.v_proj.weight", transform=GROUPED_QKV),
        _rule(_LIT + "attn.attn.bias", LAYER + "self_attn.q_proj.bias", LAYER + "self_attn.k_proj.bias",
              LAYER + "self_attn.v_proj.bias", transform=GROUPED_QKV),
        _rule(_LIT + "attn.proj.weight", LAYER + "self_attn.o_proj.weight"),
        _rule(_LIT + "attn.proj.bias", LAYER + "self_attn.o_proj.bias"),
        _rule(_LIT + "norm_2.weight", LAYER + "post_attention_layernorm.weight"),
        # xformers SwiGLU: w3(silu(w1 x) * w2 x)
        _rule(_LIT + "mlp.swiglu.w1.weight", LAYER + "mlp.gate_proj.weight"),
        _rule(_LIT + "mlp.swiglu.w2.weight", LAYER + "mlp.up_proj.weight"),
        _rule(_LIT + "mlp.swiglu.w3.weight", LAYER + "mlp.down_proj.weight"),
        _rule("transformer.ln_f.weight", "model.norm.weight"),
        _rule("lm_head.weight", "lm_head.weight"),
    ),
)

# transformers' GlmForCausalLM (the native export of GEB-shaped configs): Llama names but a fused `gate_up_proj`.
# Config: GlmConfig takes Llama's names except that its attention_bias covers q, k, v only.
GLM = Layout(
    name="glm",
    title="GLM",
    native_class="GlmForCausalLM",
    runner="transformers GlmForCausalLM",
    tensors=tuple(
        _rule(key, key) for key in _LLAMA_TENSORS if ".mlp.gate_proj." not in key and ".mlp.up_proj." not in key
    ) + (
        _rule(LAYER + "mlp.gate_up_proj.weight", LAYER + "mlp.gate_proj.weight", LAYER + "mlp.up_proj.weight",
              transform=SPLIT_ROWS),
    ),
    config_table=ConfigTable((
        *(spec for spec in LLAMA.config if spec.key not in ("mlp_bias", "attention_bias", "rope_parameters")),
        ConfigField("rope_parameters", "rope_parameters", "rope_parameters_with_fraction"),
        ConfigField("attention_bias", "attention_bias"),  # q, k and v only
    )),
    requires=(
        _ROPE,
        Requirement("rope_layout", ("interleaved",), "GLM pairs dimensions 2i and 2i + 1"),
        *_NO_MUP,
        _RMSNORM,
        Requirement("attention_out_bias", (False,), "GLM's output projection has no bias"),
        Requirement("mlp_bias", (False,), "GLM's MLP has no biases"),
    ),
)

# GEB's official tensors read into GlmForCausalLM directly (not through the package), so that the logit check of a
# GEB import runs the source tensors in an implementation that shares nothing with GEB_OFFICIAL but the key/value
# split. Package names here are GLM's.
GEB_OFFICIAL_AS_GLM = Layout(
    name="geb-official-as-glm",
    title="GEB official (read as GLM)",
    tensors=tuple(
        rule for rule in GEB_OFFICIAL.tensors if ".mlp.dense_h_to_4h." not in rule.source
    ) + (
        _rule(_GEB + "mlp.dense_h_to_4h.weight", LAYER + "mlp.gate_up_proj.weight"),
    ),
    dropped=GEB_OFFICIAL.dropped,
)

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    LLAMA, SKYWORK_OFFICIAL, BTLM_OFFICIAL, GEB_OFFICIAL, LITGPT, GLM, GEB_OFFICIAL_AS_GLM)}


# ------------------------------------------------------------------------------------ llama.cpp GGUF architectures
@dataclass(frozen=True)
class GGUFArchitecture:
    """How llama.cpp's graph of one architecture computes a package model (`convert.gguf` writes the file from this):
    which projections it fuses, how it places positions, which norm and biases it has, and what it folds into the
    weights. Sources: llama.cpp's graphs in `src/models/{llama,chatglm,jais}.cpp`, as vendored by llama-cpp-python
    0.3.36 (the module docstring of `convert/gguf.py` walks through them)."""

    name: str  # llama.cpp's `general.architecture`
    positions: str  # "rope" (RoPE, RMSNorm) or "alibi" (ALiBi slopes from one max bias, LayerNorm)
    full_rotary: bool = True  # RoPE rotates the whole head (llama) or the part `rope.dimension_count` says (chatglm)
    fused_qkv: bool = False  # one `attn_qkv` tensor, the attention scale folded into its query rows (jais)
    fused_gate_up: bool = False  # one `ffn_up` holding the gate rows, then the up rows (chatglm)
    biases: str = "any"  # "any", "qkv" (only q/k/v may have biases: chatglm) or "all" (every linear layer: jais)
    square_attention: bool = False  # heads x head_dim must equal the width (the output projection is square)
    folds_mup: bool = False  # muP's embedding and logit multipliers folded into `token_embd` / `output` (jais)
    writes_output: bool = False  # writes `output` even when the head is tied to the embedding (jais)


GGUF_ARCHITECTURES: dict[str, GGUFArchitecture] = {arch.name: arch for arch in (
    GGUFArchitecture("llama", "rope"),
    GGUFArchitecture("chatglm", "rope", full_rotary=False, fused_gate_up=True, biases="qkv", square_attention=True),
    GGUFArchitecture("jais", "alibi", fused_qkv=True, biases="all", square_attention=True, folds_mup=True,
                     writes_output=True),
)}


# ------------------------------------------------------------------------------ transformers' conversion on load
def weight_transforms(layout: Layout) -> list:
    """transformers' `WeightRenaming`s / `WeightConverter`s for loading `layout` with `from_pretrained` (a fresh list
    per call: transformers mutates transforms while loading).

    transformers applies every renaming (in order), then at most one converter whose target is the final name. So
    the block prefix (`transformer.h.` -> `model.layers.`) becomes one renaming, every other one-to-one rule a renaming
    of the name after the layer index (or of the whole name outside the blocks), and every rule with a tensor
    transform a converter on the name after the layer index."""
    from transformers.core_model_loading import WeightConverter, WeightRenaming

    renamings, converters, prefixes = [], [], {}
    for rule in layout.tensors:
        if "{layer}" not in rule.source:
            if rule.source != rule.targets[0] or len(rule.targets) > 1:
                if rule.transform is not IDENTITY:
                    raise ValueError(f"{layout.name}: {rule.source} has a transform outside the blocks")
                renamings.append(WeightRenaming(f"^{_escape(rule.source)}$", rule.targets[0]))
            continue
        source_prefix, source_suffix = rule.source.split("{layer}.")
        target_parts = [target.split("{layer}.") for target in rule.targets]
        prefixes[source_prefix] = target_parts[0][0]
        suffixes = [suffix for _, suffix in target_parts]
        operations = rule.transform.on_load()
        if operations is None:
            raise ValueError(f"{layout.name}: transform {rule.transform!r} has no on-load equivalent")
        if not operations:  # the identity: at most a rename
            if source_suffix != suffixes[0]:
                renamings.append(WeightRenaming(rf"\.{_escape(source_suffix)}$", "." + suffixes[0]))
        else:
            converters.append(WeightConverter(source_suffix, suffixes if len(suffixes) > 1 else suffixes[0],
                                              operations=operations))
    block_renamings = [WeightRenaming(f"^{_escape(source)}", target) for source, target in prefixes.items()
                       if source != target]
    return block_renamings + renamings + converters


def _escape(key: str) -> str:
    return key.replace(".", r"\.")


OFFICIAL_LAYOUTS = tuple(layout for layout in LAYOUTS.values() if layout.loads_into)


__all__ = [
    "BTLM_OFFICIAL",
    "GEB_OFFICIAL",
    "GEB_OFFICIAL_AS_GLM",
    "GLM",
    "LAYOUTS",
    "LITGPT",
    "LLAMA",
    "OFFICIAL_LAYOUTS",
    "SKYWORK_OFFICIAL",
    "GGUF_ARCHITECTURES",
    "GROUPED_QKV",
    "IDENTITY",
    "QUANTITIES",
    "SPLIT_ROWS",
    "TENSOR_TRANSFORMS",
    "TRANSPOSE",
    "TRANSPOSE_SPLIT_ROWS",
    "TensorTransform",
    "DerivedTensor",
    "GGUFArchitecture",
    "Layout",
    "Requirement",
    "TensorRule",
    "implied_fields",
    "quantity",
    "unmet_requirements",
    "weight_transforms",
]
