"""The checkpoint formats conversions read and write, and how to run each one for the logit check.

Every layout is one `hf_smallllm.layouts.Layout` (tensor names, config table, requirements, and what runs it); this
module holds the code that a layout's data names: how its config.json is written and read (`config_json_for`,
`read_config_for`, from the same table) and its runner (`RUNNERS`, by `Layout.runner`): the model that computes logits
from a checkpoint in that layout, as the layout's own code would. `native_model` builds the stock transformers twin of
a package model in memory (parity tests, benchmarks).

| layout           | weights / config                               | runner (what "the model" is in the logit check) |
|------------------|------------------------------------------------|-------------------------------------------------|
| package          | hf_smallllm names, `smallllm_<family>` config  | the package's `<Family>ForCausalLM`             |
| llama            | transformers Llama (TinyLlama, ChuXin; native) | transformers `LlamaForCausalLM`                 |
| skywork-official | Llama weights, Skywork remote-code config      | transformers `LlamaForCausalLM` (same math)     |
| glm              | transformers GLM (native export of GEB)        | transformers `GlmForCausalLM`                   |
| geb-official     | ChatGLM3 tree, GEB remote-code config          | `GlmForCausalLM` on the official tensors        |
| btlm-official    | GPT-2 Conv1D tree, BTLM remote-code config     | `references.btlm_official_logits`               |
| litgpt           | lit-gpt training checkpoint (TinyLlama)        | `references.litgpt_logits`                      |

`OFFICIAL_FORMATS` resolves each family record's `official` facts (which layout it publishes, whether its config.json's
special-token ids can be trusted) to the layouts here; a layout says which `model_type` strings its config.json
carries and how that file is read.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import GlmForCausalLM, LlamaForCausalLM
from transformers.utils import logging as hf_logging

from .. import layouts as tables
from ..errors import UsageValueError
from ..families import FAMILIES, family_of
from ..models.configuration_smallllm import SmallLLMConfig
from ..models.modeling_smallllm import SmallLLMForCausalLM
from . import configs
from .checkpoint_files import CheckpointReader
from .plan import TO_PACKAGE, export_state_dict, model_tensors, plan_conversion, run_plan
from .references import btlm_official_logits, litgpt_logits

# runner(checkpoint path, package config, input ids, weight_dtype) -> float32 logits. `weight_dtype` rounds the
# weights to that dtype before computing in float32, so a check of a cast conversion compares like with like.
Runner = Callable[[Path, SmallLLMConfig, torch.Tensor, "torch.dtype | None"], torch.Tensor]


def causal_lm_class(config: SmallLLMConfig) -> type[SmallLLMForCausalLM]:
    family = FAMILIES.get(family_of(config))
    return family.causal_lm_class if family is not None else SmallLLMForCausalLM


def _rounded(state: dict[str, torch.Tensor], weight_dtype) -> dict[str, torch.Tensor]:
    if weight_dtype is None:
        return {k: v.float() for k, v in state.items()}
    return {k: v.to(weight_dtype).float() if v.is_floating_point() else v for k, v in state.items()}


@contextmanager
def _quiet_loading():
    """The conversion shows its own progress; transformers' per-load weight bar would only interleave with it."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


@torch.no_grad()
def _model_logits(model: torch.nn.Module, input_ids: torch.Tensor, weight_dtype) -> torch.Tensor:
    model = model.float().eval()
    if weight_dtype is not None:
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                tensor.data = tensor.data.to(weight_dtype).float()
    return model(input_ids).logits.float()


def run_package(path: Path, config: SmallLLMConfig, input_ids, weight_dtype=None) -> torch.Tensor:
    with _quiet_loading():
        model = causal_lm_class(config).from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    return _model_logits(model, input_ids, weight_dtype)


def _run_native(table: tables.Layout):
    def run(path: Path, config: SmallLLMConfig, input_ids, weight_dtype=None) -> torch.Tensor:
        native = configs.native_config(config, table)
        native._attn_implementation = "eager"
        with _quiet_loading():
            model_class = NATIVE_MODEL_CLASSES[table.native_class]
            model = model_class.from_pretrained(path, config=native, dtype=torch.float32)
        return _model_logits(model, input_ids, weight_dtype)

    return run


run_llama = _run_native(tables.LLAMA)
run_glm = _run_native(tables.GLM)


def run_geb_official(path: Path, config: SmallLLMConfig, input_ids, weight_dtype=None) -> torch.Tensor:
    """GlmForCausalLM loaded straight from GEB's official tensors (`GEB_OFFICIAL_AS_GLM`), not via the package."""
    native = configs.glm_config(config)
    native._attn_implementation = "eager"
    reader = CheckpointReader.open(path)
    shapes, tied = model_tensors(GlmForCausalLM, native)
    plan = plan_conversion(tables.GEB_OFFICIAL_AS_GLM, config, TO_PACKAGE, reader.infos(), shapes, tied,
                           location=str(path))
    state: dict[str, torch.Tensor] = {}
    run_plan(plan, reader.tensors(), state.__setitem__, progress=False)
    model = GlmForCausalLM(native)
    model.load_state_dict(_rounded(state, weight_dtype), strict=False)  # strict=False: a tied head is absent
    return _model_logits(model, input_ids, None)


def run_btlm_official(path: Path, config: SmallLLMConfig, input_ids, weight_dtype=None) -> torch.Tensor:
    return btlm_official_logits(_rounded(CheckpointReader.open(path).load_all(), weight_dtype), config, input_ids)


def run_litgpt(path: Path, config: SmallLLMConfig, input_ids, weight_dtype=None) -> torch.Tensor:
    return litgpt_logits(_rounded(CheckpointReader.open(path).load_all(), weight_dtype), config, input_ids)


NATIVE_MODEL_CLASSES = {"LlamaForCausalLM": LlamaForCausalLM, "GlmForCausalLM": GlmForCausalLM}
# what computes logits from a checkpoint in a layout (`Layout.runner` says what it is)
RUNNERS: dict[str, Runner] = {
    tables.LLAMA.runner: run_llama,
    tables.GLM.runner: run_glm,
    tables.GEB_OFFICIAL.runner: run_geb_official,
    tables.BTLM_OFFICIAL.runner: run_btlm_official,
    tables.LITGPT.runner: run_litgpt,
}


def runner_for(layout: tables.Layout) -> Runner:
    return RUNNERS[layout.runner]


def config_json_for(layout: tables.Layout, config: SmallLLMConfig) -> dict[str, Any]:
    """The config.json a conversion to `layout` writes: a complete native one (Llama, GLM) or the official table's."""
    if layout.native_class is not None:
        return configs.native_config_dict(configs.native_config(config, layout), layout.native_class)
    return configs.write_config(config, layout)


def read_config_for(layout: tables.Layout) -> Callable[[dict[str, Any], type[SmallLLMConfig]], SmallLLMConfig]:
    """How an official config.json of `layout` is read: by the family config class (BTLM, GEB), else through
    transformers' LlamaConfig."""
    return configs.read_with_config_class if layout.config_read_by_class else configs.read_llama_named


# native transformers models that a package config may be exported to, in order of preference
NATIVE_LAYOUTS = {layout.name: layout for layout in (tables.LLAMA, tables.GLM)}
# the layouts families publish, by the name a family record gives (`Family.official.layout`)
PUBLISHED_LAYOUTS = {layout.name: layout for layout in (
    tables.LLAMA, tables.SKYWORK_OFFICIAL, tables.BTLM_OFFICIAL, tables.GEB_OFFICIAL)}


def native_layout_for(config: SmallLLMConfig, target: str = "auto") -> tables.Layout:
    """The native layout a package config exports to: the first of `NATIVE_LAYOUTS` (or `target`) that can express
    it; otherwise `InexpressibleConfigError` with every layout's reasons."""
    reasons = []
    for name, layout in NATIVE_LAYOUTS.items():
        if target not in ("auto", name):
            continue
        found = tables.unmet_requirements(config, layout)
        if not found:
            return layout
        reasons.append(str(configs.InexpressibleConfigError(layout.title, found)))
    raise configs.InexpressibleConfigError("native transformers", [f"{family_of(config)}: " + " | ".join(reasons)])


def native_model(model: SmallLLMForCausalLM, target: str = "auto", *, empty_init: bool = False) -> torch.nn.Module:
    """transformers' own LlamaForCausalLM / GlmForCausalLM holding the same weights as a package model (GLM's fused
    gate/up made by the GLM table), with the model's attention implementation, in eval mode: the reference the
    parity tests and benchmarks compare with. `target` is "llama", "glm" or "auto" (the first that fits).
    `empty_init` builds it on the meta device and takes the tensors (`assign=True`), so a published-size pair costs
    one copy of the weights for the unfused tensors."""
    config = model.config
    table = native_layout_for(config, target)
    native_config = configs.native_config(config, table)
    native_config._attn_implementation = config._attn_implementation
    model_class = NATIVE_MODEL_CLASSES[table.native_class]
    if empty_init:
        from accelerate import init_empty_weights

        with init_empty_weights(include_buffers=False):
            native = model_class(native_config)
    else:
        native = model_class(native_config)
    native.load_state_dict(export_state_dict(table, config, model.state_dict()), strict=True, assign=empty_init)
    if config.tie_word_embeddings:
        native.tie_weights()
    return native.eval()


@dataclass(frozen=True)
class PublishedCheckpoint:
    """What a family publishes on the Hub: its record's `official` facts (`families.OfficialFormat`) with the layout
    resolved."""

    family: str
    layout: tables.Layout
    config_json_ids_trusted: bool = True  # False: its config.json's bos/eos/pad ids are known wrong

    @property
    def model_types(self) -> tuple[str, ...]:  # `model_type` of its official config.json
        return self.layout.model_types

    @property
    def read_config(self) -> Callable[[dict[str, Any], type[SmallLLMConfig]], SmallLLMConfig]:
        return read_config_for(self.layout)


OFFICIAL_FORMATS: dict[str, PublishedCheckpoint] = {
    name: PublishedCheckpoint(name, PUBLISHED_LAYOUTS[family.official.layout], family.official.config_json_ids_trusted)
    for name, family in FAMILIES.items()
}


def official_format_for(model_type: str | None, family: str | None) -> PublishedCheckpoint:
    """The official format of a folder whose config.json has `model_type`, or of `family` when given."""
    if model_type and model_type.startswith("smallllm"):
        raise UsageValueError(f"config.json has model_type {model_type!r}: this is already an hf_smallllm checkpoint")
    if family is not None:
        if family not in OFFICIAL_FORMATS:
            raise UsageValueError(f"unknown family {family!r}; choose one of {', '.join(OFFICIAL_FORMATS)}")
        official = OFFICIAL_FORMATS[family]
        if model_type not in official.model_types:
            raise UsageValueError(f"config.json has model_type {model_type!r}, but {family}'s official checkpoints "
                                  f"have {' or '.join(repr(t) for t in official.model_types)}")
        return official
    candidates = [f for f in OFFICIAL_FORMATS.values() if model_type in f.model_types]
    if not candidates:
        known = sorted({t for f in OFFICIAL_FORMATS.values() for t in f.model_types})
        raise UsageValueError(f"config.json has model_type {model_type!r}, which is not an official layout of any "
                              f"family (known: {', '.join(known)})")
    if len(candidates) > 1:
        names = " or ".join(f.family for f in candidates)
        raise UsageValueError(f"model_type {model_type!r} is published by {names}; say which with family= (--family)")
    return candidates[0]


__all__ = [
    "NATIVE_LAYOUTS",
    "NATIVE_MODEL_CLASSES",
    "OFFICIAL_FORMATS",
    "PUBLISHED_LAYOUTS",
    "RUNNERS",
    "PublishedCheckpoint",
    "causal_lm_class",
    "config_json_for",
    "native_layout_for",
    "native_model",
    "official_format_for",
    "read_config_for",
    "run_package",
    "runner_for",
]
