"""Config translation between the package's config classes and the official / native config.json files.

Reading an official config.json is mostly the family config class's job (BTLMConfig reads GPT-2 names and both muP
spellings, GEBConfig reads ChatGLM names); Llama-named files (TinyLlama, ChuXin, Skywork) go through transformers'
`LlamaConfig`, which also normalises legacy rope fields. Writing goes the other way, one function per layout, and
refuses a config the layout cannot express with every reason at once (`InexpressibleConfigError`).

Written files follow the published ones (shared/reference/configs): the same keys and order for BTLM, GEB and
Skywork (`torch_dtype`, as their 4.3x-era remote code expects), including `auto_map` to the family's remote code.
Native Llama/GLM files are transformers' `to_dict()` in full (no defaults left out, so tools that read config.json
themselves find every field) plus the legacy `rope_theta` / `rope_scaling` / `torch_dtype` keys older readers
(vLLM, llama.cpp's converter, TGI) look for.

Special-token ids: the ids a model was trained with are the tokenizer's. On import they are taken from
tokenizer_config.json, then generation_config.json, then config.json, except for families whose published config.json
is known to carry wrong ids (ChuXin: 1 / 2 for a tokenizer with 100000 / 100001), which fall back to the family's
published ids; every disagreement is reported.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from transformers import GenerationConfig, GlmConfig, LlamaConfig

from ..errors import UsageValueError
from ..models.configuration_smallllm import SmallLLMConfig

SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")
# keys of a config.json that say where it came from rather than what the model is
_PROVENANCE_KEYS = ("_name_or_path", "transformers_version", "architectures", "auto_map", "model_type")
# transformers bookkeeping that `to_dict()` adds and no reader of a native config.json needs
_BOOKKEEPING_KEYS = ("_name_or_path", "id2label", "label2id", "problem_type", "output_hidden_states",
                     "output_attentions", "return_dict", "chunk_size_feed_forward", "is_encoder_decoder",
                     "transformers_version")
DEFAULT_ROPE_THETA = 10000.0


class InexpressibleConfigError(UsageValueError):
    """The config uses features the target layout has no way to store."""

    def __init__(self, layout: str, reasons: list[str]):
        self.reasons = reasons
        super().__init__(f"the {layout} layout cannot express this config: " + "; ".join(reasons))


def _dtype_name(config) -> str:
    dtype = getattr(config, "dtype", None)
    return str(dtype).removeprefix("torch.") if dtype is not None else "float32"


def cleaned(official: dict[str, Any]) -> dict[str, Any]:
    """An official config dict without its provenance keys, ready for a config class."""
    return {k: v for k, v in official.items() if k not in _PROVENANCE_KEYS}


# -------------------------------------------------------------------------------------------------------- reading
def generation_fields(official: dict[str, Any]) -> dict[str, Any]:
    """Sampling defaults that some official config.json files carry (GEB: temperature, top_k, ...); they belong in
    generation_config.json."""
    known = set(GenerationConfig().to_dict()) - set(SPECIAL_IDS) - {"use_cache", "transformers_version",
                                                                     "output_attentions", "output_hidden_states"}
    return {k: v for k, v in official.items() if k in known}


def read_with_config_class(official: dict[str, Any], config_class: type[SmallLLMConfig]) -> SmallLLMConfig:
    """Official config.json read by a family config class that knows the official names (BTLM, GEB)."""
    kwargs = {k: v for k, v in cleaned(official).items() if k not in generation_fields(official)}
    return config_class(**kwargs)


def read_llama_named(official: dict[str, Any], config_class: type[SmallLLMConfig]) -> SmallLLMConfig:
    """Official config.json with Llama field names (TinyLlama, ChuXin, Skywork)."""
    llama = LlamaConfig(**cleaned(official))
    return config_class(
        vocab_size=llama.vocab_size, hidden_size=llama.hidden_size, intermediate_size=llama.intermediate_size,
        num_hidden_layers=llama.num_hidden_layers, num_attention_heads=llama.num_attention_heads,
        num_key_value_heads=llama.num_key_value_heads, head_dim=llama.head_dim, hidden_act=llama.hidden_act,
        max_position_embeddings=llama.max_position_embeddings, initializer_range=llama.initializer_range,
        norm_type="rmsnorm", norm_eps=llama.rms_norm_eps, position_embedding_type="rope",
        rope_parameters=dict(llama.rope_parameters), rope_layout="half",
        # Llama's one flag puts a bias on q, k, v and o
        attention_bias=llama.attention_bias, attention_out_bias=llama.attention_bias, mlp_bias=llama.mlp_bias,
        attention_dropout=float(llama.attention_dropout), tie_word_embeddings=llama.tie_word_embeddings,
        use_cache=llama.use_cache, bos_token_id=llama.bos_token_id, eos_token_id=llama.eos_token_id,
        pad_token_id=llama.pad_token_id, dtype=llama.dtype,
    )


def _token_id(entry, folder: Path) -> int | None:
    """The id of a special token named in tokenizer_config.json (a string or {"content": ...})."""
    content = entry.get("content") if isinstance(entry, dict) else entry
    if not isinstance(content, str):
        return None
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    for token_id, token in (config.get("added_tokens_decoder") or {}).items():
        if token.get("content") == content:
            return int(token_id)
    if (folder / "tokenizer.json").is_file():
        tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        for token in tokenizer.get("added_tokens") or []:
            if token.get("content") == content:
                return int(token["id"])
        vocab = (tokenizer.get("model") or {}).get("vocab")
        if isinstance(vocab, dict) and content in vocab:
            return int(vocab[content])
    return None


def tokenizer_special_ids(folder: Path) -> dict[str, int]:
    if not (folder / "tokenizer_config.json").is_file():
        return {}
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    ids = {}
    for name in SPECIAL_IDS:
        entry = config.get(name.removesuffix("_id"))
        token_id = _token_id(entry, folder) if entry is not None else None
        if token_id is not None:
            ids[name] = token_id
    return ids


def generation_special_ids(folder: Path) -> dict[str, Any]:
    if not (folder / "generation_config.json").is_file():
        return {}
    config = json.loads((folder / "generation_config.json").read_text(encoding="utf-8"))
    return {name: config[name] for name in SPECIAL_IDS if config.get(name) is not None}


def resolve_special_ids(config: SmallLLMConfig, folder: Path | None, config_json_trusted: bool,
                        published: dict[str, Any]) -> list[str]:
    """Set the config's bos/eos/pad ids from the most reliable source in `folder`; returns what was decided where it
    differs from config.json."""
    sources = []
    if folder is not None and Path(folder).is_dir():
        sources = [("tokenizer_config.json", tokenizer_special_ids(Path(folder))),
                   ("generation_config.json", generation_special_ids(Path(folder)))]
    notes = []
    for name in SPECIAL_IDS:
        from_config_json = getattr(config, name)
        chosen, where = next(((ids[name], source) for source, ids in sources if name in ids), (None, None))
        if where is None:
            if config_json_trusted or published.get(name) is None:
                continue
            chosen, where = published[name], "the family's published tokenizer (config.json's ids are known wrong)"
        if chosen != from_config_json:
            notes.append(f"{name} = {chosen} from {where}; config.json says {from_config_json}")
            setattr(config, name, chosen)
    for name in SPECIAL_IDS:
        ids = getattr(config, name)
        for token_id in ids if isinstance(ids, list) else [ids]:
            if token_id is not None and not 0 <= token_id < config.vocab_size:
                notes.append(f"warning: {name} = {token_id} is outside the vocabulary (size {config.vocab_size})")
    return notes


def generation_config_for(config: SmallLLMConfig, folder: Path | None, official: dict[str, Any] | None = None
                          ) -> GenerationConfig:
    """generation_config.json for a converted checkpoint: the source's (or its config.json's sampling fields), with
    the config's special ids."""
    if folder is not None and (Path(folder) / "generation_config.json").is_file():
        generation = GenerationConfig.from_pretrained(folder)
    else:
        generation = GenerationConfig(**generation_fields(official or {}))
    for name in SPECIAL_IDS:
        setattr(generation, name, getattr(config, name))
    return generation


# -------------------------------------------------------------------------------------------------------- writing
def _mup_reasons(config: SmallLLMConfig, layout: str) -> list[str]:
    reasons = []
    if config.mup_embeddings_scale != 1.0:
        reasons.append(f"mup_embeddings_scale={config.mup_embeddings_scale} ({layout} has no embedding multiplier)")
    if not math.isclose(config.output_logits_multiplier, 1.0, rel_tol=1e-12):
        reasons.append(f"an output logit multiplier of {config.output_logits_multiplier:g} (muP; {layout} has none)")
    if config.mup_scale_qk_dot_by_d:
        reasons.append(f"mup_scale_qk_dot_by_d=True ({layout} scales attention scores by 1/sqrt(head_dim))")
    return reasons


def _rope_reasons(config: SmallLLMConfig, layout: str, layout_name: str, rotary_fraction: float) -> list[str]:
    if config.position_embedding_type != "rope":
        return [f"position_embedding_type={config.position_embedding_type!r} ({layout} uses RoPE)"]
    reasons = []
    if config.rope_layout != layout_name:
        reasons.append(f"rope_layout={config.rope_layout!r} ({layout} pairs dimensions as {layout_name!r})")
    if config.rotary_dim != int(config.head_dim * rotary_fraction):
        reasons.append(f"rotary_dim={config.rotary_dim} of head_dim={config.head_dim} ({layout} rotates "
                       f"{rotary_fraction:g} of each head)")
    return reasons


def llama_config(config: SmallLLMConfig) -> LlamaConfig:
    """transformers' LlamaConfig for a Llama-shaped package config."""
    reasons = _rope_reasons(config, "Llama", "half", 1.0) + _mup_reasons(config, "Llama")
    if config.norm_type != "rmsnorm":
        reasons.append(f"norm_type={config.norm_type!r} (Llama uses RMSNorm)")
    if config.attention_bias != config.attention_out_bias:
        reasons.append(f"attention_bias={config.attention_bias} with attention_out_bias={config.attention_out_bias} "
                       "(Llama's attention_bias covers q, k, v and o together)")
    if reasons:
        raise InexpressibleConfigError("Llama", reasons)
    return LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, head_dim=config.head_dim, hidden_act=config.hidden_act,
        max_position_embeddings=config.max_position_embeddings, initializer_range=config.initializer_range,
        rms_norm_eps=config.norm_eps,
        rope_parameters={k: v for k, v in config.rope_parameters.items() if k != "partial_rotary_factor"},
        attention_bias=config.attention_bias, mlp_bias=config.mlp_bias, attention_dropout=config.attention_dropout,
        tie_word_embeddings=config.tie_word_embeddings, use_cache=config.use_cache,
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        dtype=_dtype_name(config),
    )


def glm_config(config: SmallLLMConfig) -> GlmConfig:
    """transformers' GlmConfig for a GEB-shaped package config (interleaved, partial RoPE; bias only on q, k, v)."""
    reasons = _rope_reasons(config, "GLM", "interleaved", config.rotary_dim / config.head_dim
                            if config.position_embedding_type == "rope" else 1.0) + _mup_reasons(config, "GLM")
    if config.norm_type != "rmsnorm":
        reasons.append(f"norm_type={config.norm_type!r} (GLM uses RMSNorm)")
    if config.attention_out_bias:
        reasons.append("attention_out_bias=True (GLM's output projection has no bias)")
    if config.mlp_bias:
        reasons.append("mlp_bias=True (GLM's MLP has no biases)")
    if reasons:
        raise InexpressibleConfigError("GLM", reasons)
    glm = GlmConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, head_dim=config.head_dim, hidden_act=config.hidden_act,
        max_position_embeddings=config.max_position_embeddings, initializer_range=config.initializer_range,
        rms_norm_eps=config.norm_eps,
        # explicit: GlmConfig would otherwise assume GLM-4's half-rotary default
        rope_parameters={**config.rope_parameters, "partial_rotary_factor": config.rotary_dim / config.head_dim},
        attention_bias=config.attention_bias, attention_dropout=config.attention_dropout,
        tie_word_embeddings=config.tie_word_embeddings, use_cache=config.use_cache,
        bos_token_id=config.bos_token_id, pad_token_id=config.pad_token_id, dtype=_dtype_name(config),
    )
    glm.eos_token_id = config.eos_token_id  # GlmConfig replaces a missing eos with GLM-4's ids
    return glm


def native_config_dict(native: LlamaConfig | GlmConfig, architecture: str) -> dict[str, Any]:
    """A complete config.json for a stock transformers model, with the legacy keys older readers expect."""
    data = {k: v for k, v in native.to_dict().items() if k not in _BOOKKEEPING_KEYS}
    data["architectures"] = [architecture]
    rope = dict(native.rope_parameters)
    data["rope_theta"] = rope.get("rope_theta", DEFAULT_ROPE_THETA)
    scaling = {k: v for k, v in rope.items() if k not in ("rope_theta", "partial_rotary_factor")}
    data["rope_scaling"] = None if scaling.get("rope_type", "default") == "default" else scaling
    if "partial_rotary_factor" in rope:
        data["partial_rotary_factor"] = rope["partial_rotary_factor"]
    data["torch_dtype"] = data.get("dtype")
    return data


def llama_official_config(config: SmallLLMConfig) -> dict[str, Any]:
    """TinyLlama's and ChuXin's official config.json: a plain LlamaForCausalLM."""
    return native_config_dict(llama_config(config), "LlamaForCausalLM")


def skywork_official_config(config: SmallLLMConfig) -> dict[str, Any]:
    """Skywork's remote-code config.json (Llama names of transformers 4.33; HF:Skywork/Skywork-13B-base)."""
    llama_config(config)  # the same architecture constraints
    reasons = []
    if config.attention_bias or config.mlp_bias:
        reasons.append("linear biases (Skywork's remote code has none)")
    if config.head_dim * config.num_attention_heads != config.hidden_size:
        reasons.append(f"head_dim={config.head_dim} != hidden_size / num_attention_heads (Skywork derives it)")
    rope = dict(config.rope_parameters)
    rope_type = rope.get("rope_type", "default")
    if rope_type not in ("default", "linear", "dynamic"):
        reasons.append(f"rope_type={rope_type!r} (Skywork's remote code knows linear and dynamic scaling)")
    if reasons:
        raise InexpressibleConfigError("Skywork official", reasons)
    data = {
        "architectures": ["SkyworkForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_skywork.SkyworkConfig",
                     "AutoModelForCausalLM": "modeling_skywork.SkyworkForCausalLM"},
        "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id,
        "hidden_act": config.hidden_act, "hidden_size": config.hidden_size,
        "initializer_range": config.initializer_range, "intermediate_size": config.intermediate_size,
        "max_position_embeddings": config.max_position_embeddings, "model_type": "skywork",
        "num_attention_heads": config.num_attention_heads, "num_hidden_layers": config.num_hidden_layers,
        "num_key_value_heads": config.num_key_value_heads, "rms_norm_eps": config.norm_eps,
        "tie_word_embeddings": config.tie_word_embeddings, "torch_dtype": _dtype_name(config),
        "use_cache": config.use_cache, "vocab_size": config.vocab_size,
    }
    if rope.get("rope_theta", DEFAULT_ROPE_THETA) != DEFAULT_ROPE_THETA:
        data["rope_theta"] = rope["rope_theta"]
    if rope_type != "default":
        data["rope_scaling"] = {"type": rope_type, "factor": rope["factor"]}
    return data


# The published auto_map of cerebras/btlm-3b-8k-base
_BTLM_AUTO_MAP = {
    "AutoConfig": "configuration_btlm.BTLMConfig",
    "AutoModel": "modeling_btlm.BTLMModel",
    "AutoModelForCausalLM": "modeling_btlm.BTLMLMHeadModel",
    "AutoModelForQuestionAnswering": "modeling_btlm.BTLMForQuestionAnswering",
    "AutoModelForSequenceClassification": "modeling_btlm.BTLMForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_btlm.BTLMForTokenClassification",
}


def btlm_official_config(config: SmallLLMConfig) -> dict[str, Any]:
    """BTLM's remote-code config.json: GPT-2 names and the current muP spelling (`mup_width_scale`, ...)."""
    reasons = []
    if config.position_embedding_type != "alibi":
        reasons.append(f"position_embedding_type={config.position_embedding_type!r} (this layout has ALiBi only)")
    if config.norm_type != "layernorm":
        reasons.append(f"norm_type={config.norm_type!r} (BTLM uses LayerNorm with bias)")
    if not (config.attention_bias and config.attention_out_bias and config.mlp_bias):
        reasons.append("a linear layer without bias (GPT-2 Conv1D layers always have one)")
    if not config.tie_word_embeddings:
        reasons.append("tie_word_embeddings=False (BTLM's head is the embedding)")
    if config.num_key_value_heads != config.num_attention_heads:
        reasons.append(f"num_key_value_heads={config.num_key_value_heads} (BTLM's fused c_attn is multi-head)")
    if config.head_dim * config.num_attention_heads != config.hidden_size:
        reasons.append(f"head_dim={config.head_dim} != n_embd / n_head")
    if config.hidden_act != "silu":
        reasons.append(f"hidden_act={config.hidden_act!r} (BTLM's activation_function is swiglu)")
    width_scale = 1.0 / config.mup_width_multiplier
    if config.uses_mup and not math.isclose(1.0 / config.mup_ffn_multiplier, width_scale, rel_tol=1e-9):
        reasons.append(f"different muP multipliers for the width ({config.mup_width_multiplier:g}) and the MLP "
                       f"({config.mup_ffn_multiplier:g}); BTLM's config has one mup_width_scale")
    if reasons:
        raise InexpressibleConfigError("BTLM official", reasons)
    data = {
        "activation_function": "swiglu",
        "architectures": ["BTLMLMHeadModel"],
        "attn_pdrop": config.attention_dropout,
        "auto_map": dict(_BTLM_AUTO_MAP),
        "bos_token_id": config.bos_token_id,
        "embd_pdrop": 0.0,
        "eos_token_id": config.eos_token_id,
        "initializer_range": config.initializer_range,
        "layer_norm_epsilon": config.norm_eps,
        "model_type": "btlm",
        "mup_embeddings_scale": config.mup_embeddings_scale,
        "mup_output_alpha": config.mup_output_alpha,
        "mup_scale_qk_dot_by_d": config.mup_scale_qk_dot_by_d,
        "mup_width_scale": width_scale,
        "n_embd": config.hidden_size,
        "n_head": config.num_attention_heads,
        "n_inner": config.intermediate_size,
        "n_layer": config.num_hidden_layers,
        "n_positions": config.max_position_embeddings,
        "position_embedding_type": "alibi",
        "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.0,
        "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True,
        "torch_dtype": _dtype_name(config),
        "use_cache": config.use_cache,
        "vocab_size": config.vocab_size,
    }
    if config.pad_token_id is not None:
        data["pad_token_id"] = config.pad_token_id
    if config.alibi_scaling is not None:
        data["alibi_scaling"] = dict(config.alibi_scaling)
    return data


def geb_official_config(config: SmallLLMConfig) -> dict[str, Any]:
    """GEB's remote-code config.json (ChatGLM3 names; HF:GEB-AGI/geb-1.3b)."""
    reasons = _rope_reasons(config, "GEB official", "interleaved", 0.5) + _mup_reasons(config, "GEB official")
    if config.position_embedding_type == "rope":
        rope_type = config.rope_parameters.get("rope_type", "default")
        if rope_type != "default":
            reasons.append(f"rope_type={rope_type!r} (ChatGLM only scales the RoPE base, rope_ratio)")
    if config.attention_out_bias != config.mlp_bias:
        reasons.append(f"attention_out_bias={config.attention_out_bias} with mlp_bias={config.mlp_bias} (ChatGLM's "
                       "add_bias_linear covers both)")
    if config.tie_word_embeddings:
        reasons.append("tie_word_embeddings=True (ChatGLM has a separate output_layer)")
    if config.hidden_act != "silu":
        reasons.append(f"hidden_act={config.hidden_act!r} (ChatGLM's MLP is SwiGLU)")
    if reasons:
        raise InexpressibleConfigError("GEB official", reasons)
    data = {
        "architectures": ["GEBForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_geblm.GEBConfig", "AutoModel": "modeling_geb.GEBForCausalLM"},
        "model_type": "geblm",
        "num_layers": config.num_hidden_layers,
        "padded_vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "ffn_hidden_size": config.intermediate_size,
        "kv_channels": config.head_dim,
        "num_attention_heads": config.num_attention_heads,
        "torch_dtype": _dtype_name(config),
        "seq_length": config.max_position_embeddings,
        "hidden_dropout": 0.0,
        "attention_dropout": config.attention_dropout,
        "layernorm_epsilon": config.norm_eps,
        "max_position_embeddings": config.max_position_embeddings,
        "bias_dropout_fusion": True,
        "use_cache": config.use_cache,
        "apply_residual_connection_post_layernorm": False,
        "post_layer_norm": True,
        "add_bias_linear": config.attention_out_bias,
        "use_flash_attn": False,
        "num_key_value_heads": config.num_key_value_heads,
        "apply_query_key_layer_scaling": False,
        "attention_softmax_in_fp32": False,
        "fp32_residual_connection": False,
        "pre_seq_len": None,
        "prefix_projection": False,
        "tie_word_embeddings": False,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
    }
    if config.attention_bias:
        data["add_qkv_bias"] = True
    if config.norm_type != "rmsnorm":
        data["rmsnorm"] = False
    theta = config.rope_parameters.get("rope_theta", DEFAULT_ROPE_THETA) if config.rope_parameters else None
    if theta is not None and theta != DEFAULT_ROPE_THETA:
        data["rope_ratio"] = theta / DEFAULT_ROPE_THETA
    return data


__all__ = [
    "InexpressibleConfigError",
    "btlm_official_config",
    "geb_official_config",
    "generation_config_for",
    "glm_config",
    "llama_config",
    "llama_official_config",
    "native_config_dict",
    "read_llama_named",
    "read_with_config_class",
    "resolve_special_ids",
    "skywork_official_config",
]
