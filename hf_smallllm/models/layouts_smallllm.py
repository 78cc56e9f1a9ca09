"""Every foreign checkpoint layout, declared once: one `Layout` table per layout, next to the models.

A table holds what a layout *is*: its tensor names (`{layer}` stands for the block index) and which package tensors
each one holds through a named tensor transform, the tensors it stores that the package drops or derives, its
config.json keys with the config field each carries through a named config transform, the `model_type` strings its
config.json carries, and what it cannot express (`Requirement`s). Everything else is generated from the tables:

- transformers' on-load `WeightRenaming`s / `WeightConverter`s (`weight_transforms`, registered by
  `hf_smallllm.families.register`), so `BTLMForCausalLM.from_pretrained(official_folder)` converts on load;
- reading an official config.json (`read_config_fields`, called by the BTLM and GEB config classes, and by
  `hf_smallllm.convert.configs` for Llama-named files);
- the converter's key tables (`hf_smallllm.convert.plan` expands `tensors` per layer and runs the transforms of
  `hf_smallllm.convert.transforms`) and writing config.json (`hf_smallllm.convert.configs.write_config`).

This file ships as remote code (the BTLM and GEB config classes read their official config.json through it), so it
imports only the standard library and transformers (its weight operations only inside `weight_transforms`). Tensor
transforms are names here; `convert.transforms` implements them on tensors and `weight_transforms` maps them to
transformers' operations.

Sources of the facts: docs/architectures.md 1.3 (BTLM), 5.2 (GEB / ChatGLM3), 3.3 (lit-gpt); the Llama names are
transformers' own and the package's (TinyLlama, ChuXin and Skywork publish them); GLM is transformers'
`GlmForCausalLM`, the native model for GEB-shaped checkpoints (fused `gate_up_proj`, gate first). Published config.json
files: HF:cerebras/btlm-3b-8k-base, HF:GEB-AGI/geb-1.3b, HF:Skywork/Skywork-13B-base.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from transformers.utils import logging

logger = logging.get_logger(__name__)

LAYER = "model.layers.{layer}."
DEFAULT_ROPE_THETA = 10000.0


# ------------------------------------------------------------------------------------------------------- the types
@dataclass(frozen=True)
class TensorRule:
    """One foreign tensor and the package tensor(s) it holds, through a named tensor transform."""

    source: str
    targets: tuple[str, ...]
    transform: str = "identity"  # identity | transpose | split_rows | transpose_split_rows | grouped_qkv


@dataclass(frozen=True)
class DerivedTensor:
    """A foreign tensor that a rule carries but a checkpoint may lack, and the function of the config that stands in
    for it then (`compute` names a function in `hf_smallllm.convert.plan.DERIVED_TENSORS`): BTLM's ALiBi slopes are
    converted as stored both ways, and computed for a checkpoint that has none (a package checkpoint saved before the
    package stored them)."""

    key: str
    compute: str


@dataclass(frozen=True)
class ConfigField:
    """One key of the layout's config.json and the package config field it carries.

    `transform` names a `ConfigTransform` (below); `value` is the constant a layout always writes (`field` None), or
    the only value it can read (`transform="require"`); `aliases` are older spellings accepted on read; `note` says
    what the package implements, for error messages."""

    key: str
    field: str | None = None
    transform: str = "copy"
    value: Any = None
    aliases: tuple[str, ...] = ()
    note: str = ""


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
    model_types: tuple[str, ...] = ()  # `model_type` of its config.json (official layouts)
    loads_into: tuple[str, ...] = ()  # package model_types whose `from_pretrained` converts this layout on load
    config: tuple[ConfigField, ...] = ()
    sort_config_keys: bool = False  # the published config.json is written with sorted keys
    requires: tuple[Requirement, ...] = ()

    @property
    def renamed_fields(self) -> dict[str, str]:
        """{official key: package field} for keys that carry one field under another name (GPT-2's `n_embd` ->
        `hidden_size`, ...): a config class's `attribute_map`, so the official names stay readable."""
        return {f.key: f.field for f in self.config if f.field and f.key != f.field}


def _rule(source: str, *targets: str, transform: str = "identity") -> TensorRule:
    return TensorRule(source, tuple(targets), transform)


def _same(*keys: str) -> tuple[ConfigField, ...]:
    """Keys the layout shares with the package config."""
    return tuple(ConfigField(key, key) for key in keys)


def _constant(key: str, value: Any) -> ConfigField:
    """A key the layout always writes with `value` and the package ignores on read (numerics, kernels)."""
    return ConfigField(key, None, "ignore", value)


def _provenance(key: str, value: Any) -> ConfigField:
    """`architectures`, `auto_map`, `model_type`: written as the layout publishes them, read by transformers."""
    return ConfigField(key, None, "provenance", value)


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


# ------------------------------------------------------------------------------------------- config transforms
_ABSENT = object()


class ConfigTransform:
    """How one config.json key becomes package config fields (`read`) and back (`write`).

    `read(config, spec, value, kwargs)` runs in the config class's `__post_init__` before validation: it sets
    attributes on `config` or puts keyword arguments into `kwargs` (those the base class reads, e.g. `rope_theta`).
    `write(config, spec)` returns the value to store, or `OMIT`."""

    def read(self, config, spec: ConfigField, value, kwargs: dict) -> None:
        setattr(config, spec.field, value)

    def write(self, config, spec: ConfigField):
        return getattr(config, spec.field)


OMIT = object()


class _Ignore(ConfigTransform):
    """Written as the layout's constant (or from `field`); dropped on read: it changes only numerics or kernels."""

    def read(self, config, spec, value, kwargs):
        pass

    def write(self, config, spec):
        return getattr(config, spec.field) if spec.field else spec.value


class _Require(ConfigTransform):
    """The package implements only `value`; any other value on read is an error. Written as `value`."""

    def read(self, config, spec, value, kwargs):
        if value != spec.value:
            raise ValueError(f"{spec.key}={value!r} is not supported ({spec.note or 'only ' + repr(spec.value)}).")

    def write(self, config, spec):
        return spec.value


class _RequireUnwritten(_Require):
    """As `require`, but the published config.json does not carry the key."""

    def write(self, config, spec):
        return OMIT


class _Provenance(_Ignore):
    """transformers' own bookkeeping keys (`architectures`, `auto_map`, `model_type`): written as the layout's
    constant; on read left to transformers, which handles them for every config (package checkpoints carry them too)."""

    def read(self, config, spec, value, kwargs):
        kwargs[spec.key] = value


class _Drop(ConfigTransform):
    """Read and ignored (it changes only numerics or kernels); the published file does not carry it."""

    def read(self, config, spec, value, kwargs):
        pass

    def write(self, config, spec):
        return OMIT


class _WarnIfSet(_Ignore):
    """A dropout the package does not have: a non-zero value is reported and ignored."""

    def read(self, config, spec, value, kwargs):
        if value:
            logger.warning("%s is ignored: %s.", spec.key, spec.note)


class _IfSet(ConfigTransform):
    """Written only when the field is set."""

    def write(self, config, spec):
        value = getattr(config, spec.field)
        if value is None:
            return OMIT
        return dict(value) if isinstance(value, dict) else value


class _BothAttentionBiases(ConfigTransform):
    """Llama's `attention_bias`: one flag for q, k, v and the output projection."""

    def read(self, config, spec, value, kwargs):
        config.attention_bias = config.attention_out_bias = bool(value)

    def write(self, config, spec):
        return config.attention_bias


class _RopeParameters(ConfigTransform):
    """transformers' `rope_parameters`. Llama rotates whole heads (no `partial_rotary_factor`); GLM is given the
    fraction explicitly, since GlmConfig would otherwise assume GLM-4's half-rotary default."""

    def __init__(self, rotary_fraction: bool):
        self.rotary_fraction = rotary_fraction

    def read(self, config, spec, value, kwargs):
        config.rope_parameters = dict(value)

    def write(self, config, spec):
        rope = {k: v for k, v in config.rope_parameters.items() if k != "partial_rotary_factor"}
        if self.rotary_fraction:
            rope["partial_rotary_factor"] = config.rotary_dim / config.head_dim
        return rope


class _DtypeName(ConfigTransform):
    """`torch_dtype` as written by transformers 4.x; on read transformers itself maps it to `dtype`."""

    def read(self, config, spec, value, kwargs):
        kwargs[spec.key] = value

    def write(self, config, spec):
        dtype = getattr(config, "dtype", None)
        return str(dtype).removeprefix("torch.") if dtype is not None else "float32"


class _Gpt2Inner(ConfigTransform):
    """GPT-2's `n_inner`: None means 4 x width."""

    def read(self, config, spec, value, kwargs):
        setattr(config, spec.field, 4 * config.hidden_size if value is None else value)


class _BtlmMupWidthScale(ConfigTransform):
    """BTLM's one muP width scale (`mup_width_scale`, before commit eb4f0e4 `width_scale`, with the logit multiplier
    then stored premultiplied as `output_logits_scale` = alpha x width scale): the base sizes are derived from it
    (`mup_base_hidden_size = n_embd x width_scale`), so nothing is typed twice."""

    def read(self, config, spec, value, kwargs):
        output_logits_scale = kwargs.pop("output_logits_scale", None)
        if value is not None:
            if not value > 0:
                raise ValueError(f"mup_width_scale={value!r} must be positive.")
            config.mup_base_hidden_size = config.hidden_size * value
            config.mup_base_intermediate_size = config.intermediate_size * value
            if output_logits_scale is not None:
                config.mup_output_alpha = output_logits_scale / value
        elif output_logits_scale is not None:
            # Without a width scale the multiplier is the whole story: a base width equal to the width.
            config.mup_base_hidden_size = float(config.hidden_size)
            config.mup_base_intermediate_size = float(config.intermediate_size)
            config.mup_output_alpha = output_logits_scale

    def write(self, config, spec):
        return 1.0 / config.mup_width_multiplier


class _ChatglmMultiQuery(ConfigTransform):
    """ChatGLM's `multi_query_attention` flag with `multi_query_group_num` key/value heads (read only: the package
    writes `num_key_value_heads`, which GEB's config also carries)."""

    def read(self, config, spec, value, kwargs):
        groups = kwargs.pop("multi_query_group_num", None)
        if value:
            config.num_key_value_heads = groups

    def write(self, config, spec):
        return OMIT


class _ChatglmLinearBias(ConfigTransform):
    """ChatGLM's `add_bias_linear`: one flag for the attention output projection and the MLP."""

    def read(self, config, spec, value, kwargs):
        config.attention_out_bias = config.mlp_bias = bool(value)

    def write(self, config, spec):
        return config.attention_out_bias


class _TrueOrOmit(ConfigTransform):
    """A flag the published file carries only when set (ChatGLM's `add_qkv_bias`)."""

    def read(self, config, spec, value, kwargs):
        setattr(config, spec.field, bool(value))

    def write(self, config, spec):
        return True if getattr(config, spec.field) else OMIT


class _ChatglmRmsnorm(ConfigTransform):
    """ChatGLM's `rmsnorm` flag (absent: RMSNorm)."""

    def read(self, config, spec, value, kwargs):
        config.norm_type = "rmsnorm" if value else "layernorm"

    def write(self, config, spec):
        return OMIT if config.norm_type == "rmsnorm" else False


class _ChatglmRopeRatio(ConfigTransform):
    """ChatGLM3-32k style base scaling: theta = 10000 x `rope_ratio` (absent: 1)."""

    def read(self, config, spec, value, kwargs):
        kwargs["rope_theta"] = DEFAULT_ROPE_THETA * value

    def write(self, config, spec):
        theta = config.rope_parameters.get("rope_theta", DEFAULT_ROPE_THETA) if config.rope_parameters else None
        return theta / DEFAULT_ROPE_THETA if theta is not None and theta != DEFAULT_ROPE_THETA else OMIT


class _SkyworkRopeTheta(ConfigTransform):
    """Skywork's remote code (transformers 4.33 names) carries `rope_theta` only when it is not the default."""

    def read(self, config, spec, value, kwargs):
        kwargs["rope_theta"] = value

    def write(self, config, spec):
        theta = dict(config.rope_parameters).get("rope_theta", DEFAULT_ROPE_THETA)
        return theta if theta != DEFAULT_ROPE_THETA else OMIT


class _SkyworkRopeScaling(ConfigTransform):
    """Skywork's legacy `rope_scaling` {"type", "factor"} (linear or dynamic), absent without scaling."""

    def read(self, config, spec, value, kwargs):
        if value:
            kwargs["rope_scaling"] = value

    def write(self, config, spec):
        rope = dict(config.rope_parameters)
        rope_type = rope.get("rope_type", "default")
        return OMIT if rope_type == "default" else {"type": rope_type, "factor": rope["factor"]}


CONFIG_TRANSFORMS: dict[str, ConfigTransform] = {
    "copy": ConfigTransform(),
    "ignore": _Ignore(),
    "provenance": _Provenance(),
    "drop": _Drop(),
    "both_attention_biases": _BothAttentionBiases(),
    "rope_parameters": _RopeParameters(rotary_fraction=False),
    "rope_parameters_with_fraction": _RopeParameters(rotary_fraction=True),
    "require": _Require(),
    "require_unwritten": _RequireUnwritten(),
    "warn_if_set": _WarnIfSet(),
    "if_set": _IfSet(),
    "dtype_name": _DtypeName(),
    "gpt2_inner": _Gpt2Inner(),
    "btlm_mup_width_scale": _BtlmMupWidthScale(),
    "chatglm_multi_query": _ChatglmMultiQuery(),
    "chatglm_linear_bias": _ChatglmLinearBias(),
    "true_or_omit": _TrueOrOmit(),
    "chatglm_rmsnorm": _ChatglmRmsnorm(),
    "chatglm_rope_ratio": _ChatglmRopeRatio(),
    "skywork_rope_theta": _SkyworkRopeTheta(),
    "skywork_rope_scaling": _SkyworkRopeScaling(),
}


def read_config_fields(config, layout: Layout, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Apply the official keys of `layout` found in `kwargs` to `config` (a config class's `__post_init__` calls this
    before validating); returns the keyword arguments left for the base class. Keys the package config shares with
    the layout never reach here (they are the config's own fields)."""
    for spec in layout.config:
        names = [name for name in (spec.key, *spec.aliases) if name in kwargs]
        if not names:
            continue
        value = _ABSENT
        for name in names:  # the current spelling wins over older ones
            popped = kwargs.pop(name)
            value = popped if value is _ABSENT else value
        CONFIG_TRANSFORMS[spec.transform].read(config, spec, value, kwargs)
    return kwargs


def write_config_fields(config, layout: Layout) -> dict[str, Any]:
    """The layout's config.json keys for `config` (requirements are the caller's: `unmet_requirements`)."""
    data = {}
    for spec in layout.config:
        value = CONFIG_TRANSFORMS[spec.transform].write(config, spec)
        if value is not OMIT:
            data[spec.key] = value
    return dict(sorted(data.items())) if layout.sort_config_keys else data


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
    # the package's own names: every rule is the identity
    tensors=tuple(_rule(key, key) for key in _LLAMA_TENSORS),
    # checkpoints saved by transformers < 4.31 carry the rotary table of every layer
    dropped=(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",),
    model_types=("llama",),
    config=(
        *_same("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "initializer_range"),
        ConfigField("rms_norm_eps", "norm_eps"),
        ConfigField("rope_parameters", "rope_parameters", "rope_parameters"),
        ConfigField("attention_bias", None, "both_attention_biases"),
        *_same("mlp_bias", "attention_dropout", "tie_word_embeddings", "use_cache", "bos_token_id", "eos_token_id",
               "pad_token_id"),
        ConfigField("dtype", None, "dtype_name"),
    ),
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
    tensors=LLAMA.tensors,
    dropped=LLAMA.dropped,
    model_types=("skywork",),
    config=(
        _provenance("architectures", ["SkyworkForCausalLM"]),
        _provenance("auto_map", {"AutoConfig": "configuration_skywork.SkyworkConfig",
                               "AutoModelForCausalLM": "modeling_skywork.SkyworkForCausalLM"}),
        *_same("bos_token_id", "eos_token_id", "pad_token_id", "hidden_act", "hidden_size", "initializer_range",
               "intermediate_size", "max_position_embeddings"),
        _provenance("model_type", "skywork"),
        *_same("num_attention_heads", "num_hidden_layers", "num_key_value_heads"),
        ConfigField("rms_norm_eps", "norm_eps"),
        *_same("tie_word_embeddings"),
        ConfigField("torch_dtype", transform="dtype_name"),
        *_same("use_cache", "vocab_size"),
        ConfigField("rope_theta", transform="skywork_rope_theta"),
        ConfigField("rope_scaling", transform="skywork_rope_scaling"),
    ),
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
    tensors=(
        _rule("transformer.wte.weight", "model.embed_tokens.weight"),
        _rule(_BTLM + "ln_1.weight", LAYER + "input_layernorm.weight"),
        _rule(_BTLM + "ln_1.bias", LAYER + "input_layernorm.bias"),
        # Conv1D [in, 3 * hidden], columns q | k | v
        _rule(_BTLM + "attn.c_attn.weight", LAYER + "self_attn.q_proj.weight", LAYER + "self_attn.k_proj.weight",
              LAYER + "self_attn.v_proj.weight", transform="transpose_split_rows"),
        _rule(_BTLM + "attn.c_attn.bias", LAYER + "self_attn.q_proj.bias", LAYER + "self_attn.k_proj.bias",
              LAYER + "self_attn.v_proj.bias", transform="split_rows"),
        _rule(_BTLM + "attn.c_proj.weight", LAYER + "self_attn.o_proj.weight", transform="transpose"),
        _rule(_BTLM + "attn.c_proj.bias", LAYER + "self_attn.o_proj.bias"),
        _rule(_BTLM + "ln_2.weight", LAYER + "post_attention_layernorm.weight"),
        _rule(_BTLM + "ln_2.bias", LAYER + "post_attention_layernorm.bias"),
        # SiLU goes on c_fc2, so c_fc2 is the gate and c_fc the up projection (docs/architectures.md 1.4)
        _rule(_BTLM + "mlp.c_fc.weight", LAYER + "mlp.up_proj.weight", transform="transpose"),
        _rule(_BTLM + "mlp.c_fc.bias", LAYER + "mlp.up_proj.bias"),
        _rule(_BTLM + "mlp.c_fc2.weight", LAYER + "mlp.gate_proj.weight", transform="transpose"),
        _rule(_BTLM + "mlp.c_fc2.bias", LAYER + "mlp.gate_proj.bias"),
        _rule(_BTLM + "mlp.c_proj.weight", LAYER + "mlp.down_proj.weight", transform="transpose"),
        _rule(_BTLM + "mlp.c_proj.bias", LAYER + "mlp.down_proj.bias"),
        _rule("transformer.ln_f.weight", "model.norm.weight"),
        _rule("transformer.ln_f.bias", "model.norm.bias"),
        # BTLM ties the head to `wte`; a file that stores it anyway must hold the same values
        _rule("lm_head.weight", "lm_head.weight"),
        # [heads, 1]; the official forward uses the stored values (rounded, in a bf16 checkpoint), and so do we
        _rule("transformer.relative_pe.slopes", "model.alibi.slopes"),
    ),
    derived=(DerivedTensor("transformer.relative_pe.slopes", "alibi_slopes"),),
    model_types=("btlm",),
    loads_into=("smallllm_btlm",),
    # read in this order (n_inner's default needs the width, the muP base sizes need both); written sorted
    sort_config_keys=True,
    config=(
        ConfigField("n_embd", "hidden_size"),
        ConfigField("n_layer", "num_hidden_layers"),
        ConfigField("n_head", "num_attention_heads"),
        ConfigField("n_inner", "intermediate_size", "gpt2_inner"),
        ConfigField("n_positions", "max_position_embeddings"),
        ConfigField("layer_norm_epsilon", "norm_eps"),
        ConfigField("activation_function", None, "require", "swiglu", note="BTLM's gated MLP needs 'swiglu'"),
        # GPT-2 flags whose published BTLM values are the only ones this implementation computes
        ConfigField("scale_attn_weights", None, "require", True, note="BTLMConfig implements only True"),
        ConfigField("scale_attn_by_inverse_layer_idx", None, "require", False,
                    note="BTLMConfig implements only False"),
        _constant("reorder_and_upcast_attn", False),  # only changes the dtype of the score computation
        ConfigField("attn_pdrop", "attention_dropout"),
        ConfigField("embd_pdrop", None, "warn_if_set", 0.0, note="hf_smallllm models have no embedding dropout"),
        ConfigField("resid_pdrop", None, "warn_if_set", 0.0, note="hf_smallllm models have no residual dropout"),
        ConfigField("mup_embeddings_scale", "mup_embeddings_scale", aliases=("embeddings_scale",)),
        ConfigField("mup_scale_qk_dot_by_d", "mup_scale_qk_dot_by_d", aliases=("scale_qk_dot_by_d",)),
        ConfigField("mup_output_alpha", "mup_output_alpha"),
        ConfigField("mup_width_scale", None, "btlm_mup_width_scale", aliases=("width_scale",)),
        _provenance("architectures", ["BTLMLMHeadModel"]),
        # the published auto_map of cerebras/btlm-3b-8k-base
        _provenance("auto_map", {
            "AutoConfig": "configuration_btlm.BTLMConfig",
            "AutoModel": "modeling_btlm.BTLMModel",
            "AutoModelForCausalLM": "modeling_btlm.BTLMLMHeadModel",
            "AutoModelForQuestionAnswering": "modeling_btlm.BTLMForQuestionAnswering",
            "AutoModelForSequenceClassification": "modeling_btlm.BTLMForSequenceClassification",
            "AutoModelForTokenClassification": "modeling_btlm.BTLMForTokenClassification",
        }),
        _provenance("model_type", "btlm"),
        *_same("bos_token_id", "eos_token_id", "initializer_range", "position_embedding_type", "use_cache",
               "vocab_size"),
        ConfigField("pad_token_id", "pad_token_id", "if_set"),
        ConfigField("alibi_scaling", "alibi_scaling", "if_set"),
        ConfigField("torch_dtype", transform="dtype_name"),
    ),
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
    tensors=(
        _rule("transformer.embedding.word_embeddings.weight", "model.embed_tokens.weight"),
        _rule(_GEB + "input_layernorm.weight", LAYER + "input_layernorm.weight"),
        _rule(_GEB + "input_layernorm.bias", LAYER + "input_layernorm.bias"),
        _rule(_GEB + "self_attention.query.weight", LAYER + "self_attn.q_proj.weight"),
        _rule(_GEB + "self_attention.query.bias", LAYER + "self_attn.q_proj.bias"),
        # all K heads, then all V heads
        _rule(_GEB + "self_attention.key_value.weight", LAYER + "self_attn.k_proj.weight",
              LAYER + "self_attn.v_proj.weight", transform="split_rows"),
        _rule(_GEB + "self_attention.key_value.bias", LAYER + "self_attn.k_proj.bias",
              LAYER + "self_attn.v_proj.bias", transform="split_rows"),
        _rule(_GEB + "self_attention.dense.weight", LAYER + "self_attn.o_proj.weight"),
        _rule(_GEB + "self_attention.dense.bias", LAYER + "self_attn.o_proj.bias"),
        _rule(_GEB + "post_attention_layernorm.weight", LAYER + "post_attention_layernorm.weight"),
        _rule(_GEB + "post_attention_layernorm.bias", LAYER + "post_attention_layernorm.bias"),
        # SwiGLU halves: SiLU(first) * second
        _rule(_GEB + "mlp.dense_h_to_4h.weight", LAYER + "mlp.gate_proj.weight", LAYER + "mlp.up_proj.weight",
              transform="split_rows"),
        _rule(_GEB + "mlp.dense_h_to_4h.bias", LAYER + "mlp.gate_proj.bias", LAYER + "mlp.up_proj.bias",
              transform="split_rows"),
        _rule(_GEB + "mlp.dense_4h_to_h.weight", LAYER + "mlp.down_proj.weight"),
        _rule(_GEB + "mlp.dense_4h_to_h.bias", LAYER + "mlp.down_proj.bias"),
        _rule("transformer.encoder.final_layernorm.weight", "model.norm.weight"),
        _rule("transformer.encoder.final_layernorm.bias", "model.norm.bias"),
        _rule("transformer.output_layer.weight", "lm_head.weight"),
    ),
    # ChatGLM keeps its RoPE frequencies as a persistent buffer; the package derives them from the config
    dropped=(r"transformer\.rotary_pos_emb\.inv_freq",),
    model_types=("geblm", "chatglm"),
    loads_into=("smallllm_geb",),
    config=(
        _provenance("architectures", ["GEBForCausalLM"]),
        _provenance("auto_map", {"AutoConfig": "configuration_geblm.GEBConfig",
                               "AutoModel": "modeling_geb.GEBForCausalLM"}),
        _provenance("model_type", "geblm"),
        ConfigField("num_layers", "num_hidden_layers"),
        ConfigField("padded_vocab_size", "vocab_size"),
        *_same("hidden_size"),
        ConfigField("ffn_hidden_size", "intermediate_size"),
        ConfigField("kv_channels", "head_dim"),
        *_same("num_attention_heads"),
        ConfigField("torch_dtype", transform="dtype_name"),
        # ChatGLM flags that only change numerics or kernels (fp32 softmax, fused dropout, ...)
        ConfigField("seq_length", "max_position_embeddings", "ignore"),
        _constant("hidden_dropout", 0.0),
        *_same("attention_dropout"),
        ConfigField("layernorm_epsilon", "norm_eps"),
        *_same("max_position_embeddings"),
        _constant("bias_dropout_fusion", True),
        *_same("use_cache"),
        ConfigField("apply_residual_connection_post_layernorm", None, "require", False,
                    note="this class implements pre-norm residual connections"),
        ConfigField("post_layer_norm", None, "require", True,
                    note="this class implements a final norm after the last layer"),
        ConfigField("add_bias_linear", None, "chatglm_linear_bias"),
        _constant("use_flash_attn", False),
        *_same("num_key_value_heads"),
        _constant("apply_query_key_layer_scaling", False),
        _constant("attention_softmax_in_fp32", False),
        _constant("fp32_residual_connection", False),
        ConfigField("pre_seq_len", None, "require", None, note="this class implements no P-tuning prefix"),
        _constant("prefix_projection", False),
        *_same("tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id"),
        ConfigField("add_qkv_bias", "attention_bias", "true_or_omit"),
        ConfigField("rmsnorm", None, "chatglm_rmsnorm"),
        ConfigField("rope_ratio", None, "chatglm_rope_ratio"),
        # read only
        ConfigField("multi_query_attention", None, "chatglm_multi_query"),
        ConfigField("multi_query_group_num", None, "drop"),  # without multi_query_attention it means nothing
        ConfigField("original_rope", None, "require_unwritten", True,
                    note="this class implements ChatGLM2/3's original half-rotary RoPE"),
        ConfigField("classifier_dropout", None, "drop"),
    ),
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
    tensors=(
        _rule("transformer.wte.weight", "model.embed_tokens.weight"),
        _rule(_LIT + "norm_1.weight", LAYER + "input_layernorm.weight"),
        _rule(_LIT + "attn.attn.weight", LAYER + "self_attn.q_proj.weight", LAYER + "self_attn.k_proj.weight",
              LAYER + "self_attn.v_proj.weight", transform="grouped_qkv"),
        _rule(_LIT + "attn.attn.bias", LAYER + "self_attn.q_proj.bias", LAYER + "self_attn.k_proj.bias",
              LAYER + "self_attn.v_proj.bias", transform="grouped_qkv"),
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
    tensors=tuple(
        _rule(key, key) for key in _LLAMA_TENSORS if ".mlp.gate_proj." not in key and ".mlp.up_proj." not in key
    ) + (
        _rule(LAYER + "mlp.gate_up_proj.weight", LAYER + "mlp.gate_proj.weight", LAYER + "mlp.up_proj.weight",
              transform="split_rows"),
    ),
    config=(
        *(spec for spec in LLAMA.config if spec.key not in ("mlp_bias", "attention_bias", "rope_parameters")),
        ConfigField("rope_parameters", "rope_parameters", "rope_parameters_with_fraction"),
        ConfigField("attention_bias", "attention_bias"),  # q, k and v only
    ),
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


# ------------------------------------------------------------------------------ transformers' conversion on load
def weight_transforms(layout: Layout) -> list:
    """transformers' `WeightRenaming`s / `WeightConverter`s for loading `layout` with `from_pretrained` (a fresh list
    per call: transformers mutates transforms while loading).

    transformers applies every renaming (in order), then at most one converter whose target is the final name. So
    the block prefix (`transformer.h.` -> `model.layers.`) becomes one renaming, every other one-to-one rule a renaming
    of the name after the layer index (or of the whole name outside the blocks), and every rule with a tensor
    transform a converter on the name after the layer index."""
    from transformers.core_model_loading import Chunk, Transpose, WeightConverter, WeightRenaming

    operations = {
        "transpose": lambda: [Transpose(0, 1)],
        "split_rows": lambda: [Chunk(dim=0)],  # equal parts: q/k/v of a multi-head model, k/v, gate/up
        "transpose_split_rows": lambda: [Transpose(0, 1), Chunk(dim=0)],
    }
    renamings, converters, prefixes = [], [], {}
    for rule in layout.tensors:
        if "{layer}" not in rule.source:
            if rule.source != rule.targets[0] or len(rule.targets) > 1:
                if rule.transform != "identity":
                    raise ValueError(f"{layout.name}: {rule.source} has a transform outside the blocks")
                renamings.append(WeightRenaming(f"^{_escape(rule.source)}$", rule.targets[0]))
            continue
        source_prefix, source_suffix = rule.source.split("{layer}.")
        target_parts = [target.split("{layer}.") for target in rule.targets]
        prefixes[source_prefix] = target_parts[0][0]
        suffixes = [suffix for _, suffix in target_parts]
        if rule.transform == "identity":
            if source_suffix != suffixes[0]:
                renamings.append(WeightRenaming(rf"\.{_escape(source_suffix)}$", "." + suffixes[0]))
        elif rule.transform in operations:
            converters.append(WeightConverter(source_suffix, suffixes if len(suffixes) > 1 else suffixes[0],
                                              operations=operations[rule.transform]()))
        else:
            raise ValueError(f"{layout.name}: transform {rule.transform!r} has no on-load equivalent")
    block_renamings = [WeightRenaming(f"^{_escape(source)}", target) for source, target in prefixes.items()
                       if source != target]
    return block_renamings + renamings + converters


def _escape(key: str) -> str:
    return key.replace(".", r"\.")


OFFICIAL_LAYOUTS = tuple(layout for layout in LAYOUTS.values() if layout.loads_into)


__all__ = [
    "BTLM_OFFICIAL",
    "CONFIG_TRANSFORMS",
    "GEB_OFFICIAL",
    "GEB_OFFICIAL_AS_GLM",
    "GLM",
    "LAYOUTS",
    "LITGPT",
    "LLAMA",
    "OFFICIAL_LAYOUTS",
    "SKYWORK_OFFICIAL",
    "ConfigField",
    "DerivedTensor",
    "Layout",
    "Requirement",
    "TensorRule",
    "implied_fields",
    "read_config_fields",
    "unmet_requirements",
    "weight_transforms",
    "write_config_fields",
]
