"""Turning a recipe into the objects a run needs: tokenizer, model, data stream, callbacks. `run.build_run`
assembles them (with the accelerator, the parallel plan and the checkpointer) for the engine."""

import torch

from ..data import (
    DocumentSource,
    MixtureSchedule,
    OnTheFlyTokens,
    PackedBatchStream,
    SequenceLengthSchedule,
    StreamStage,
    open_prepared,
    read_manifest,
    tokenizer_identity,
)
from ..families import FAMILIES, family_of, preset_config
from .extensions import RunContext, build_section_callbacks
from .recipe import Recipe, RecipeError


def load_tokenizer(recipe: Recipe):
    from transformers import AutoTokenizer

    if not recipe.tokenizer:
        raise RecipeError("tokenizer: the recipe needs a tokenizer folder (train one with `hf-smallllm tokenizer "
                          "train`, or set tokenizer: path)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(recipe.tokenizer)
    except (OSError, ValueError) as err:
        raise RecipeError(f"tokenizer: cannot load {recipe.tokenizer!r} ({err})") from err
    if tokenizer.eos_token_id is None:
        raise RecipeError(f"tokenizer: {recipe.tokenizer!r} has no EOS token; documents must end with one")
    return tokenizer


def build_model(recipe: Recipe, tokenizer=None):
    """A fresh model from family + preset + config overrides (vocabulary and special ids from the tokenizer), or the
    checkpoint named in `model.init_from` for continued pretraining."""
    section = recipe.model
    if section.init_from:
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(section.init_from)
        if section.config:  # e.g. a raised rope_theta and a longer context for long-context training
            values = {**config.to_dict(), **section.config}
            if "rope_theta" in section.config and values.get("rope_parameters"):
                values["rope_parameters"] = {**values["rope_parameters"], "rope_theta": section.config["rope_theta"]}
            values.pop("model_type", None)
            try:
                config = type(config)(**values)
            except ValueError as err:
                raise RecipeError(f"model.config: {err}") from err
        model = AutoModelForCausalLM.from_pretrained(section.init_from, config=config,
                                                     attn_implementation=section.attn_implementation)
    else:
        overrides = dict(section.config)
        if tokenizer is not None and section.vocab_from_tokenizer:
            overrides.setdefault("vocab_size", len(tokenizer))
            for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
                value = getattr(tokenizer, name)
                if value is not None:
                    overrides.setdefault(name, value)
        try:
            config = preset_config(section.family, section.preset, attn_implementation=section.attn_implementation,
                                   **overrides)
        except ValueError as err:
            raise RecipeError(f"model: {err}") from err
        model = FAMILIES[section.family].causal_lm_class(config)
    if tokenizer is not None and len(tokenizer) > model.config.vocab_size:
        raise RecipeError(f"model: the tokenizer has {len(tokenizer)} entries but the model only "
                          f"{model.config.vocab_size} embedding rows")
    if section.gradient_checkpointing:
        model.activation_checkpointing_enable()
    model.config.use_cache = False  # training forwards never need a KV cache
    return model


def build_stream(recipe: Recipe, tokenizer, world_size: int = 1, rank: int = 0) -> PackedBatchStream:
    """The data stream of process `rank` of `world_size` (the ranks of a stage's context-parallel group, its
    `training.context_parallel`, read the same rows). Sources with `prepared` (or all, with `data.prepared`) read
    token shards from `hf-smallllm data prepare`, checked against the recipe's tokenizer first; the others tokenize
    on the fly."""
    data, training = recipe.data, recipe.training
    sources = {}
    identity = None
    manifests = {}
    for index, spec in enumerate(data.sources):
        folder = spec.get("prepared") or data.prepared
        try:
            if folder:
                if identity is None:
                    identity = tokenizer_identity(tokenizer)
                if folder not in manifests:
                    manifests[folder] = read_manifest(folder)
                sources[spec["name"]] = open_prepared(folder, spec["name"], identity, data.add_bos, spec,
                                                      manifest=manifests[folder])
            else:
                source = DocumentSource.from_dict(spec)
                sources[source.name] = OnTheFlyTokens(source, tokenizer, add_bos=data.add_bos,
                                                      tokenize_batch=data.tokenize_batch)
        except (ValueError, FileNotFoundError) as err:
            raise RecipeError(f"data.sources[{index}] ({spec.get('name')}): {err}") from err
    try:
        stages = [StreamStage(stage.name, stage.steps,
                              MixtureSchedule(stage.mixture_phases, stage.steps, sources=list(sources)),
                              SequenceLengthSchedule(stage.seq_len_phases, stage.steps, stage.data.tokens_per_step),
                              stage.training.gradient_accumulation_steps, stage.data.packing,
                              ranks_per_row=stage.training.context_parallel)
                  for stage in recipe.stage_plans]
        return PackedBatchStream(sources, None, None, training.max_steps, world_size=world_size, rank=rank,
                                 seed=training.seed, eos_token_id=tokenizer.eos_token_id,
                                 flash_attn_kwargs=data.flash_attn_kwargs, stages=stages)
    except ValueError as err:
        raise RecipeError(f"data: {err}") from err


def prepare_data(recipe: Recipe, output=None, tokenizer=None, **kwargs):
    """`hf-smallllm data prepare`: the recipe's sources tokenized with its tokenizer into `output` (default: the
    recipe's `data.prepared`); `kwargs` go to `prepare_sources` (workers, shard_chars, overwrite, progress).
    Returns (folder, manifest)."""
    from pathlib import Path

    from ..data.prepare import prepare_sources

    folder = output or recipe.data.prepared
    if not folder:
        raise RecipeError("data.prepared: no output folder; pass --output or set data.prepared in the recipe")
    for index, spec in enumerate(recipe.data.sources):
        if not spec.get("paths") and spec.get("dataset") is None:
            raise RecipeError(f"data.sources[{index}] ({spec.get('name')}): nothing to prepare (no 'paths' or "
                              "'dataset')")
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(recipe)
    kwargs.setdefault("tokenize_batch", max(recipe.data.tokenize_batch, 256))
    return Path(folder), prepare_sources(recipe.data.sources, tokenizer, folder, add_bos=recipe.data.add_bos,
                                         **kwargs)


def build_callbacks(recipe: Recipe, model, tokenizer, is_main_process: bool) -> list:
    context = RunContext(output_dir=recipe.training.output_dir, recipe=recipe.to_dict(), family=family_of(model.config),
                         tokenizer=tokenizer, is_main_process=is_main_process)
    return build_section_callbacks(recipe.to_dict(), context)


def autocast_dtype(precision: str):
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


__all__ = ["autocast_dtype", "build_callbacks", "build_model", "build_stream", "load_tokenizer", "prepare_data"]
