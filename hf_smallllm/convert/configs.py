"""Config translation between the package's config classes and the official / native config.json files.

Both directions come from the layout tables (`hf_smallllm.layouts`): reading an official config.json
is the family config class's job for BTLM and GEB (their `__post_init__` applies the table's config fields); Llama-named
files (TinyLlama, ChuXin, Skywork) go through transformers' `LlamaConfig`, which also normalises legacy rope fields,
and then the Llama table. Writing (`write_config`) is the table's fields in the published order, refusing a config the
layout cannot express (the table's requirements) with every reason at once (`InexpressibleConfigError`).

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
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from transformers import GenerationConfig, GlmConfig, LlamaConfig

from ..errors import UsageValueError
from ..layouts import GLM, LLAMA, Layout, implied_fields, unmet_requirements
from ..models.config_tables_smallllm import CONFIG_TRANSFORMS, DEFAULT_ROPE_THETA, write_config_fields
from ..models.configuration_smallllm import SmallLLMConfig

SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")
# keys of a config.json that say where it came from rather than what the model is
_PROVENANCE_KEYS = ("_name_or_path", "transformers_version", "architectures", "auto_map", "model_type")
# transformers bookkeeping that `to_dict()` adds and no reader of a native config.json needs
_BOOKKEEPING_KEYS = ("_name_or_path", "id2label", "label2id", "problem_type", "output_hidden_states",
                     "output_attentions", "return_dict", "chunk_size_feed_forward", "is_encoder_decoder",
                     "transformers_version")


class InexpressibleConfigError(UsageValueError):
    """The config uses features the target layout has no way to store."""

    def __init__(self, layout: str, reasons: list[str]):
        self.reasons = reasons
        super().__init__(f"the {layout} layout cannot express this config: " + "; ".join(reasons))


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
    """Official config.json with Llama field names (TinyLlama, ChuXin, Skywork), read through transformers' LlamaConfig
    (which normalises legacy rope fields) and the Llama table's fields; what Llama cannot vary is implied."""
    llama = LlamaConfig(**cleaned(official))
    values, kwargs = SimpleNamespace(**implied_fields(LLAMA)), {}
    for spec in LLAMA.config:
        CONFIG_TRANSFORMS[spec.transform].read(values, spec, getattr(llama, spec.key), kwargs)
    return config_class(**vars(values), **kwargs)


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
def write_config(config: SmallLLMConfig, table: Layout) -> dict[str, Any]:
    """The config.json keys of `table` for `config` (its `config` fields, in the published order); a config the layout
    cannot express is refused with every reason at once."""
    reasons = unmet_requirements(config, table)
    if reasons:
        raise InexpressibleConfigError(table.title, reasons)
    return write_config_fields(config, table.config_table)


_NATIVE_CONFIG_CLASSES = {LLAMA.name: LlamaConfig, GLM.name: GlmConfig}


def native_config(config: SmallLLMConfig, table: Layout) -> LlamaConfig | GlmConfig:
    """transformers' LlamaConfig (`table=LLAMA`) or GlmConfig (`GLM`) for a package config that the layout can
    express; the one place a native config is built (conversion, reference twins, parity tests)."""
    native = _NATIVE_CONFIG_CLASSES[table.name](**write_config(config, table))
    native.eos_token_id = config.eos_token_id  # GlmConfig replaces a missing eos with GLM-4's ids
    return native


def llama_config(config: SmallLLMConfig) -> LlamaConfig:
    """transformers' LlamaConfig for a Llama-shaped package config."""
    return native_config(config, LLAMA)


def glm_config(config: SmallLLMConfig) -> GlmConfig:
    """transformers' GlmConfig for a GEB-shaped package config (interleaved, partial RoPE; bias only on q, k, v)."""
    return native_config(config, GLM)


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


__all__ = [
    "InexpressibleConfigError",
    "generation_config_for",
    "glm_config",
    "llama_config",
    "native_config",
    "native_config_dict",
    "read_llama_named",
    "read_with_config_class",
    "resolve_special_ids",
    "write_config",
]
