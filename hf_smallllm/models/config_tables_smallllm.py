"""The config.json of every layout a family publishes, declared once: one `ConfigTable` per layout.

A table lists the layout's config.json keys with the package config field each carries through a named config
transform (`CONFIG_TRANSFORMS`, below; each converts both ways), and the `model_type` strings that config.json
carries. The BTLM and GEB config classes read their official config.json through it (`read_config_fields`, in
`__post_init__`), so an official folder loads directly; `hf_smallllm.convert.configs` writes config.json back from
the same tables (`write_config_fields`), and `hf_smallllm.layouts` joins each table with the layout's tensor names.

This file ships as remote code (imported by the BTLM, GEB, Skywork, TinyLlama and ChuXin config classes), so it holds
only what reading a config needs and imports only the standard library and transformers. The tensor tables, what a
layout cannot express and the layouts no family publishes (lit-gpt, GLM) are in `hf_smallllm.layouts`, not shipped.

Sources of the facts: docs/architectures.md 1.3 (BTLM), 5.2 (GEB / ChatGLM3); the Llama names are transformers' own
(TinyLlama and ChuXin publish them). Published config.json files: HF:cerebras/btlm-3b-8k-base, HF:GEB-AGI/geb-1.3b,
HF:Skywork/Skywork-13B-base.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers.utils import logging

logger = logging.get_logger(__name__)

DEFAULT_ROPE_THETA = 10000.0


# ------------------------------------------------------------------------------------------------------- the types
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
class ConfigTable:
    """One layout's config.json: its keys (`config`, read in this order) and the `model_type` strings it carries."""

    config: tuple[ConfigField, ...] = ()
    model_types: tuple[str, ...] = ()
    sort_config_keys: bool = False  # the published config.json is written with sorted keys

    @property
    def renamed_fields(self) -> dict[str, str]:
        """{official key: package field} for keys that carry one field under another name (GPT-2's `n_embd` ->
        `hidden_size`, ...): a config class's `attribute_map`, so the official names stay readable."""
        return {f.key: f.field for f in self.config if f.field and f.key != f.field}


def _same(*keys: str) -> tuple[ConfigField, ...]:
    """Keys the layout shares with the package config."""
    return tuple(ConfigField(key, key) for key in keys)


def _constant(key: str, value: Any) -> ConfigField:
    """A key the layout always writes with `value` and the package ignores on read (numerics, kernels)."""
    return ConfigField(key, None, "ignore", value)


def _provenance(key: str, value: Any) -> ConfigField:
    """`architectures`, `auto_map`, `model_type`: written as the layout publishes them, read by transformers."""
    return ConfigField(key, None, "provenance", value)



# ------------------------------------------------------------------------------------------- config transforms
_ABSENT = object()


class ConfigTransform:
    """How one config.json key becomes package config fields (`read`) and back (`write`).

    `read(config, spec, value, kwargs)` runs in the config class's `__post_init__` before validation: it sets
    attributes on `config` or puts keyword arguments into `kwargs` (those the base class reads, e.g. `rope_theta`).
    `write(config, spec)` returns the value to store, or `OMIT`."""

    def read(self, config, spec: ConfigField, value, kwargs: dict) -> None:
        setattr(config, _field(spec), value)

    def write(self, config, spec: ConfigField):
        return getattr(config, _field(spec))


def _field(spec: ConfigField) -> str:
    """The package field of a key that carries one (a table error otherwise, caught by tests/convert/test_layouts)."""
    if spec.field is None:
        raise ValueError(f"config.json key {spec.key!r}: transform {spec.transform!r} needs a package field")
    return spec.field


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


def read_config_fields(config, table: ConfigTable, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Apply the official keys of `table` found in `kwargs` to `config` (a config class's `__post_init__` calls this
    before validating); returns the keyword arguments left for the base class. Keys the package config shares with
    the layout never reach here (they are the config's own fields)."""
    for spec in table.config:
        names = [name for name in (spec.key, *spec.aliases) if name in kwargs]
        if not names:
            continue
        value = _ABSENT
        for name in names:  # the current spelling wins over older ones
            popped = kwargs.pop(name)
            value = popped if value is _ABSENT else value
        CONFIG_TRANSFORMS[spec.transform].read(config, spec, value, kwargs)
    return kwargs


def write_config_fields(config, table: ConfigTable) -> dict[str, Any]:
    """The table's config.json keys for `config` (what the layout cannot express is the caller's to check:
    `hf_smallllm.layouts.unmet_requirements`)."""
    data = {}
    for spec in table.config:
        value = CONFIG_TRANSFORMS[spec.transform].write(config, spec)
        if value is not OMIT:
            data[spec.key] = value
    return dict(sorted(data.items())) if table.sort_config_keys else data


# ------------------------------------------------------------------------------------------------------ the tables
# transformers' LlamaConfig names (TinyLlama's and ChuXin's config.json, and the native export): the keyword
# arguments of `LlamaConfig` (`convert.configs.native_config`) and, through a LlamaConfig that normalises legacy rope
# fields, what a Llama-named config.json says (`convert.configs.read_llama_named`).
LLAMA_CONFIG = ConfigTable(
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
)

# Skywork's remote-code config.json: transformers 4.33 config names (HF:Skywork/Skywork-13B-base).
SKYWORK_CONFIG = ConfigTable(
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
)

# BTLM (`BTLMLMHeadModel`): GPT-2 names and two spellings of the muP fields (current `mup_*`, and the names before
# commit eb4f0e4).
BTLM_CONFIG = ConfigTable(
    model_types=("btlm",),
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
)

# GEB (`GEBForCausalLM`): ChatGLM3 names (commit 93e390f).
GEB_CONFIG = ConfigTable(
    model_types=("geblm", "chatglm"),
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
)


__all__ = [
    "BTLM_CONFIG",
    "CONFIG_TRANSFORMS",
    "DEFAULT_ROPE_THETA",
    "GEB_CONFIG",
    "LLAMA_CONFIG",
    "OMIT",
    "SKYWORK_CONFIG",
    "ConfigField",
    "ConfigTable",
    "ConfigTransform",
    "read_config_fields",
    "write_config_fields",
]
