"""`run_sft` and `run_dpo`: one call from a recipe to a fine-tuned model (used by the CLI, `training/sft.py` and the
demo), both on TRL (`trainer.py`).

Each installs the family's chat template (and its tokens) into the tokenizer, loads or takes the model (full
precision, or bitsandbytes 8-bit/4-bit with the CPU repacking trap switched off), wraps it with LoRA when asked,
checks the data (bad records skipped and counted, or an error), trains with TRL's trainer under the recipe's
optimizer, schedule and atomic checkpoints, and exports the model in the package format (`output_dir/merged`: LoRA
merged into full-precision weights; with remote code and `auto_map` like every save of the package).

SFT: records become assistant-only-label examples (`samples.py`); TRL batches or packs them. DPO: preference pairs
(`preferences.py`) go to TRL's DPOTrainer, which renders them with the chat template. Its reference policy is the
recipe's `dpo.ref_model`, else the starting model itself: the policy with its LoRA adapters disabled (LoRA), or a
frozen copy of the starting checkpoint (full DPO; TRL loads it from `model.init_from`).
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
from ..train.checkpointer import resolve_resume
from ..train.recipe import RecipeError
from .adapters import apply_lora, export_merged, load_base_model, lora_config, merge_adapter, save_model_atomic
from .recipe import DPORecipe, SFTRecipe, load_dpo_recipe, load_sft_recipe
from .records import RecordSource
from .samples import SampleReport, build_examples
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
    run = _Run(recipe, resume, model, tokenizer)
    train, evaluation, report = _sft_datasets(recipe, run.tokenizer)
    from .trainer import SmallLLMSFTTrainer, sft_config

    args = sft_config(recipe, has_eval=evaluation is not None)
    run.write_records(args, report)
    trainer = SmallLLMSFTTrainer(model=run.model, args=args, train_dataset=train, eval_dataset=evaluation,
                                 processing_class=run.tokenizer, callbacks=run.callbacks(args, extra_callbacks),
                                 recipe=recipe)
    return run.finish(trainer, args, report, has_eval=evaluation is not None)


def run_dpo(recipe, overrides=None, resume: bool | str = False, model=None, tokenizer=None,
            extra_callbacks: list | None = None) -> SFTResult:
    """Preference-tune from a DPO `recipe` (a path, a shipped name such as "dpo_lora", a mapping or a DPORecipe);
    the other arguments as for `run_sft`. Typically `model.init_from` is an SFT output (`.../merged`)."""
    recipe = load_dpo_recipe(recipe, overrides)
    run = _Run(recipe, resume, model, tokenizer)
    train, evaluation, report = _dpo_datasets(recipe, run.tokenizer)
    from .trainer import SmallLLMDPOTrainer, dpo_config

    args = dpo_config(recipe, has_eval=evaluation is not None)
    run.write_records(args, report)
    trainer = SmallLLMDPOTrainer(model=run.model, ref_model=run.reference_model(), args=args, train_dataset=train,
                                 eval_dataset=evaluation, processing_class=run.tokenizer,
                                 callbacks=run.callbacks(args, extra_callbacks), recipe=recipe)
    return run.finish(trainer, args, report, has_eval=evaluation is not None)


class _Run:
    """What SFT and DPO runs share: tokenizer with the chat template, the model (quantized, LoRA-wrapped), the run
    folder's records, and the export after training."""

    def __init__(self, recipe: SFTRecipe, resume, model, tokenizer):
        self.recipe = recipe
        self.output_dir = Path(recipe.training.output_dir)
        self.resume_from = resolve_resume(self.output_dir, resume)
        from transformers import set_seed

        set_seed(recipe.training.seed)
        if model is None and recipe.model.init_from and not Path(recipe.model.init_from).exists():
            raise UsageFileNotFoundError(f"model.init_from: no folder {recipe.model.init_from!r}")
        self.tokenizer = _tokenizer(recipe, tokenizer)
        model = _model(recipe, model, self.tokenizer)
        self.format = chat_format_for(family_of(model.config), recipe.chat_format)
        self.new_token_ids = install_chat_template(self.tokenizer, self.format)
        resize_embeddings_for(model, self.tokenizer)
        model.generation_config.eos_token_id = stop_token_ids(self.tokenizer, self.format)
        if self.tokenizer.pad_token_id is not None:
            model.generation_config.pad_token_id = self.tokenizer.pad_token_id
        model.config.use_cache = False
        self.quantized = recipe.model.quantization != "none"
        self.starting_model = model
        if recipe.lora.enabled:
            section = recipe.lora
            config = lora_config(section.r, section.alpha, section.dropout, section.target_modules, self.new_token_ids,
                                 tied_embeddings=bool(model.config.tie_word_embeddings))
            model = apply_lora(model, config, self.quantized, recipe.model.gradient_checkpointing)
        elif recipe.model.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.model = model

    def reference_model(self):
        """DPO's reference policy: the recipe's `dpo.ref_model`; for full DPO without one, a frozen copy of the
        starting model when it was not loaded unchanged from a folder (else TRL loads that folder itself); None with
        LoRA (TRL disables the adapters)."""
        dpo = self.recipe.dpo
        if dpo.ref_model is not None:
            reference = load_base_model(dpo.ref_model, attn_implementation=self.recipe.model.attn_implementation,
                                        dtype=self.recipe.model.dtype)
            resize_embeddings_for(reference, self.tokenizer)
            return reference
        if self.recipe.lora.enabled:
            return None
        if self.recipe.model.init_from and not self.new_token_ids and not self.resume_from:
            return None
        reference = copy.deepcopy(self.starting_model)  # before training starts: the starting weights
        reference.requires_grad_(False)
        return reference

    def write_records(self, args, report: SampleReport) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if args.should_save:  # the main process only
            write_json_atomic(self.output_dir / DATA_REPORT_NAME, report.to_dict(), sort_keys=True)
            name = "dpo_recipe.yaml" if isinstance(self.recipe, DPORecipe) else "sft_recipe.yaml"
            (self.output_dir / name).write_text(_yaml(self.recipe.to_dict()), encoding="utf-8")

    def callbacks(self, args, extra_callbacks) -> list:
        label = "dpo" if isinstance(self.recipe, DPORecipe) else "sft"
        return [RunLogger(self.output_dir / METRICS_NAME, self.recipe.training.progress_bar, args.should_save,
                          description=label),
                *(extra_callbacks or [])]

    def finish(self, trainer, args, report: SampleReport, has_eval: bool) -> SFTResult:
        recipe = self.recipe
        output = trainer.train(resume_from_checkpoint=str(self.resume_from) if self.resume_from else None)
        eval_loss = None
        if has_eval:  # the final step's eval when the schedule already ran it, else one now
            done = [log["eval_loss"] for log in trainer.state.log_history
                    if "eval_loss" in log and log.get("step") == trainer.state.global_step]
            eval_loss = done[-1] if done else trainer.evaluate()["eval_loss"]
        final = latest_checkpoint(self.output_dir)
        merged_dir = None
        trained = trainer.model
        if recipe.lora.enabled and recipe.export.merged and args.should_save:
            merged_dir = self.output_dir / "merged"
            if self.quantized:  # merge into a full-precision copy of the base, never into 4-bit/8-bit weights
                export_merged(final, merged_dir, base=recipe.model.init_from)
            else:
                trained = merge_adapter(trained)
                save_model_atomic(trained, merged_dir, self.tokenizer)
        elif not recipe.lora.enabled:
            merged_dir = final
        return SFTResult(output_dir=self.output_dir, final_checkpoint=final, merged_dir=merged_dir,
                         metrics_path=self.output_dir / METRICS_NAME, global_step=trainer.state.global_step,
                         train_loss=output.training_loss, eval_loss=eval_loss, report=report,
                         chat_format=self.format.name, model=trained, tokenizer=self.tokenizer, recipe=recipe)


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


def _sources(recipe: SFTRecipe) -> list[RecordSource]:
    try:
        return [RecordSource.from_dict(spec) for spec in recipe.data.sources]
    except (TypeError, ValueError) as err:
        raise RecipeError(f"data.sources: {err}") from err


def _split(recipe: SFTRecipe, rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """The last `data.eval_fraction` of the rows are held out for evaluation."""
    fraction = recipe.data.eval_fraction
    held_out = int(len(rows) * fraction)
    if fraction and held_out == 0:
        raise RecipeError(f"data.eval_fraction={fraction} holds out no sample of {len(rows)}")
    return (rows[:-held_out], rows[-held_out:]) if held_out else (rows, [])


def _dataset(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_list(rows) if rows else None


def _sft_datasets(recipe: SFTRecipe, tokenizer):
    data = recipe.data
    examples, report = build_examples(_sources(recipe), tokenizer, data.max_length, data.on_bad_sample,
                                      progress=recipe.training.progress_bar)
    logger.info("SFT data: %s", report.summary())
    train, evaluation = _split(recipe, [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
    return _dataset(train), _dataset(evaluation), report


def _dpo_datasets(recipe: DPORecipe, tokenizer):
    from .preferences import build_preferences

    data = recipe.data
    pairs, report = build_preferences(_sources(recipe), tokenizer, data.max_length, data.on_bad_sample)
    logger.info("DPO data: %s", report.summary())
    train, evaluation = _split(recipe, pairs)
    return _dataset(train), _dataset(evaluation), report


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False, allow_unicode=True)


__all__ = ["DATA_REPORT_NAME", "SFTResult", "run_dpo", "run_sft"]
