"""`run_sft`: one call from an SFT recipe to a fine-tuned model (used by the CLI, `training/sft.py` and the demo).

It installs the chat template (and its tokens) into the tokenizer, loads or takes the model (full precision, or
bitsandbytes 8-bit/4-bit), wraps it with LoRA when asked, builds assistant-only-label examples (optionally packed),
trains with `SFTTrainer`, and exports the merged model in the package format (`output_dir/merged`).
"""

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageFileNotFoundError
from ..families import FAMILIES, family_of, preset_config
from ..runfiles import METRICS_NAME, latest_checkpoint, write_json_atomic
from ..train.callbacks import RunLogger
from ..train.checkpoint import resolve_resume
from ..train.recipe import RecipeError
from .adapters import apply_lora, export_merged, load_base_model, lora_config, merge_adapter, save_model_atomic
from .recipe import SFTRecipe, load_sft_recipe
from .records import RecordSource
from .samples import SampleReport, build_examples, example_row, pack_examples
from .templates import chat_format_for, install_chat_template, resize_embeddings_for, stop_token_ids

logger = logging.getLogger(__name__)
DATA_REPORT_NAME = "sft_data_report.json"


@dataclass
class SFTResult:
    output_dir: Path
    final_checkpoint: Path | None  # the last checkpoint (an adapter folder for LoRA runs)
    merged_dir: Path | None  # the exported model (LoRA merged), a complete save_pretrained folder
    metrics_path: Path
    global_step: int
    train_loss: float | None
    eval_loss: float | None
    report: SampleReport
    chat_format: str
    model: object  # the trained model (PeftModel for LoRA runs, merged into its base when exported)
    tokenizer: object
    recipe: SFTRecipe


def run_sft(recipe, overrides=None, resume: bool | str = False, model=None, tokenizer=None,
            extra_callbacks: list | None = None) -> SFTResult:
    """Fine-tune from `recipe` (a path, a shipped name such as "sft_lora", a mapping or an SFTRecipe) with
    `overrides` (`["training.max_steps=20"]` or a dotted dict). `model`/`tokenizer` may be given in memory (e.g.
    straight after pretraining) instead of `model.init_from`/`tokenizer` paths. `resume=True` continues from the
    newest complete checkpoint in the output folder (weights or adapter, optimizer, scheduler, data position);
    a path resumes from that checkpoint."""
    recipe = load_sft_recipe(recipe, overrides)
    output_dir = Path(recipe.training.output_dir)
    resume_from = resolve_resume(output_dir, resume)
    from transformers import set_seed

    set_seed(recipe.training.seed)
    if model is None and recipe.model.init_from and not Path(recipe.model.init_from).exists():
        raise UsageFileNotFoundError(f"model.init_from: no folder {recipe.model.init_from!r}")
    tokenizer = _tokenizer(recipe, tokenizer)
    model = _model(recipe, model, tokenizer)
    family = family_of(model.config)
    fmt = chat_format_for(family, recipe.chat_format)
    new_token_ids = install_chat_template(tokenizer, fmt)
    resize_embeddings_for(model, tokenizer)
    model.generation_config.eos_token_id = stop_token_ids(tokenizer, fmt)
    if tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False

    quantized = recipe.model.quantization != "none"
    if recipe.lora.enabled:
        section = recipe.lora
        config = lora_config(section.r, section.alpha, section.dropout, section.target_modules, new_token_ids,
                             tied_embeddings=bool(model.config.tie_word_embeddings))
        model = apply_lora(model, config, quantized, recipe.model.gradient_checkpointing)
    elif recipe.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()

    train_rows, eval_rows, report = _datasets(recipe, tokenizer)
    from ..data import PackedCollator
    from .trainer import SFTTrainer, sft_training_arguments

    args = sft_training_arguments(recipe, has_eval=bool(eval_rows))
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.should_save:  # the main process only
        write_json_atomic(output_dir / DATA_REPORT_NAME, report.to_dict(), sort_keys=True)
        (output_dir / "sft_recipe.yaml").write_text(_yaml(recipe.to_dict()), encoding="utf-8")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    callbacks = [RunLogger(output_dir / METRICS_NAME, recipe.training.progress_bar, args.should_save)]
    callbacks += list(extra_callbacks or [])
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_rows, eval_dataset=eval_rows or None,
                         data_collator=PackedCollator(pad, recipe.data.flash_attn_kwargs), processing_class=tokenizer,
                         callbacks=callbacks, recipe=recipe)
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    eval_loss = None
    if eval_rows:  # the final step's eval when the schedule already ran it, else one now
        done = [log["eval_loss"] for log in trainer.state.log_history
                if "eval_loss" in log and log.get("step") == trainer.state.global_step]
        eval_loss = done[-1] if done else trainer.evaluate()["eval_loss"]
    final = latest_checkpoint(output_dir)

    merged_dir = None
    trained = trainer.model
    if recipe.lora.enabled and recipe.export.merged and args.should_save:
        merged_dir = output_dir / "merged"
        if quantized:  # merge into a full-precision copy of the base, never into 4-bit/8-bit weights
            export_merged(final, merged_dir, base=recipe.model.init_from)
        else:
            trained = merge_adapter(trained)
            save_model_atomic(trained, merged_dir, tokenizer)
    elif not recipe.lora.enabled:
        merged_dir = final
    return SFTResult(output_dir=output_dir, final_checkpoint=final, merged_dir=merged_dir,
                     metrics_path=output_dir / METRICS_NAME, global_step=trainer.state.global_step,
                     train_loss=output.training_loss, eval_loss=eval_loss, report=report, chat_format=fmt.name,
                     model=trained, tokenizer=tokenizer, recipe=recipe)


def _tokenizer(recipe: SFTRecipe, tokenizer):
    if tokenizer is not None:
        return copy.deepcopy(tokenizer)  # the chat template and its tokens go into a copy, not the caller's object
    path = recipe.tokenizer or recipe.model.init_from
    if not path:
        raise RecipeError("tokenizer: give a tokenizer folder (tokenizer: PATH) or model.init_from with one")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise RecipeError(f"tokenizer: cannot load {path!r} ({err})") from err
    return tokenizer


def _model(recipe: SFTRecipe, model, tokenizer):
    section = recipe.model
    if model is not None:
        if section.quantization != "none":
            raise RecipeError("model.quantization needs model.init_from (a folder); a model instance was given")
        return model
    if section.init_from:
        quant_options = {}
        if section.quantization == "4bit":
            quant_options = {"quant_type": section.bnb_4bit_quant_type, "compute_dtype": section.bnb_4bit_compute_dtype,
                             "double_quant": section.bnb_4bit_use_double_quant}
        return load_base_model(section.init_from, section.quantization, section.attn_implementation, section.dtype,
                               **quant_options)
    overrides = {"vocab_size": len(tokenizer), **section.config}
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(tokenizer, name) is not None:
            overrides.setdefault(name, getattr(tokenizer, name))
    config = preset_config(section.family, section.preset, attn_implementation=section.attn_implementation,
                           **overrides)
    return FAMILIES[section.family].causal_lm_class(config)


def _datasets(recipe: SFTRecipe, tokenizer):
    data = recipe.data
    try:
        sources = [RecordSource.from_dict(spec) for spec in data.sources]
    except (TypeError, ValueError) as err:
        raise RecipeError(f"data.sources: {err}") from err
    examples, report = build_examples(sources, tokenizer, data.max_length, data.on_bad_sample,
                                      progress=recipe.training.progress_bar)
    logger.info("SFT data: %s", report.summary())
    held_out = int(len(examples) * data.eval_fraction)
    if data.eval_fraction and held_out == 0:
        raise RecipeError(f"data.eval_fraction={data.eval_fraction} holds out no sample of {len(examples)}")
    train, evaluation = (examples[:-held_out], examples[-held_out:]) if held_out else (examples, [])
    if data.packing:
        train_rows = pack_examples(train, data.seq_len or data.max_length)
        eval_rows = pack_examples(evaluation, data.seq_len or data.max_length) if evaluation else []
    else:
        train_rows = [example_row(e) for e in train]
        eval_rows = [example_row(e) for e in evaluation]
    as_dict = lambda rows: [{"input_ids": r.input_ids, "labels": r.labels, "position_ids": r.position_ids}  # noqa
                            for r in rows]
    return as_dict(train_rows), as_dict(eval_rows), report


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False, allow_unicode=True)


__all__ = ["DATA_REPORT_NAME", "SFTResult", "run_sft"]
