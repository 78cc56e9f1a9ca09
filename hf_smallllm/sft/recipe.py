"""SFT and DPO recipes: one YAML file for an instruction fine-tuning run (full, LoRA or QLoRA) or a preference
tuning run (DPO, full or LoRA).

Sections: `model` (what to fine-tune and how to load it), `tokenizer`, `chat_format`, `data` (record sources, length
limit, bad-sample policy, packing), `lora`, `optimizer` and `schedule` (the pretraining recipe's sections, same
fields), `training`, `export`; a DPO recipe adds `dpo` (beta, loss, the reference model). Unknown keys and wrong
types fail at load time with the field's path, as in pretraining recipes (`hf_smallllm/train/recipe.py`, whose
validation helpers this reuses); `--set key.sub=value` overrides fields. Shipped recipes are `sft_*.yaml` and
`dpo_*.yaml` among the package's recipes (`hf_smallllm/resources/recipes/`, which `training/recipes/` links to),
found by name.
"""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..families import PRESETS
from ..train.recipe import OptimizerSection, RecipeError, ScheduleSection, _build, apply_overrides, read_recipe_source
from .adapters import LORA_TARGET_MODULES, QUANTIZATION_MODES
from .samples import BAD_SAMPLE_POLICIES
from .templates import CHAT_FORMATS


@dataclass
class SFTModelSection:
    init_from: str | None = None  # a save_pretrained folder to fine-tune (a pretraining checkpoint, a converted model)
    family: str = "tinyllama"  # without init_from: a fresh model of this family/preset (tests, demos)
    preset: str = "tiny"
    config: dict = field(default_factory=dict)  # config overrides for a fresh model
    attn_implementation: str = "sdpa"
    dtype: str = "float32"  # weights of an unquantized model: float32 | bfloat16
    quantization: str = "none"  # none | 8bit | 4bit (bitsandbytes; 4bit + lora = QLoRA)
    bnb_4bit_quant_type: str = "nf4"  # nf4 | fp4
    bnb_4bit_compute_dtype: str = "float32"
    bnb_4bit_use_double_quant: bool = True
    gradient_checkpointing: bool = False


@dataclass
class SFTDataSection:
    sources: list[dict] = field(default_factory=list)  # RecordSource fields: name, path(s) | dataset, format, limit
    max_length: int = 512  # longer samples are bad samples (skipped and counted, or an error)
    on_bad_sample: str = "skip"  # skip (count by reason, report) | error (stop at the first)
    packing: bool = False  # SFT: whole samples packed into rows of seq_len (TRL's BFD; positions restart per sample)
    seq_len: int | None = None  # packed row length (default: max_length)
    eval_fraction: float = 0.0  # hold out this fraction of samples (the last ones) for evaluation


@dataclass
class LoraSection:
    enabled: bool = True  # false: full fine-tuning
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list = field(default_factory=lambda: list(LORA_TARGET_MODULES))


@dataclass
class SFTTrainingSection:
    output_dir: str = "runs/sft"
    max_steps: int = -1  # > 0: stop after this many optimizer steps; -1: run num_epochs
    num_epochs: float = 1.0
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    precision: str = "fp32"  # fp32 | bf16 | fp16 (GPU)
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 100
    save_total_limit: int | None = None
    eval_steps: int | None = None  # evaluate every N steps (needs data.eval_fraction > 0); None: at the end only
    tensorboard: bool = False
    progress_bar: bool = True


@dataclass
class ExportSection:
    merged: bool = True  # after training, write output_dir/merged: LoRA merged into the weights, package format


DPO_LOSSES = ("sigmoid", "hinge", "ipo", "robust")


@dataclass
class DPOSection:
    beta: float = 0.1  # strength of the pull towards the reference model (TRL's beta)
    loss_type: str = "sigmoid"  # sigmoid (DPO) | hinge | ipo | robust
    label_smoothing: float = 0.0  # the share of preference labels assumed flipped (robust / cDPO)
    # The reference policy. null: the starting model itself, i.e. the policy with its LoRA adapters disabled (LoRA
    # runs, no second copy in memory) or a frozen copy loaded from model.init_from (full DPO). A path: that model.
    ref_model: str | None = None
    precompute_ref_log_probs: bool = False  # compute the reference log-probabilities once before training


@dataclass
class SFTRecipe:
    model: SFTModelSection = field(default_factory=SFTModelSection)
    tokenizer: str | None = None  # a tokenizer folder; default: model.init_from
    chat_format: str = "auto"  # auto (the family's) | generic | zephyr | geb | chatglm3 | skywork
    data: SFTDataSection = field(default_factory=SFTDataSection)
    lora: LoraSection = field(default_factory=LoraSection)
    optimizer: OptimizerSection = field(default_factory=lambda: OptimizerSection(lr=2e-4, weight_decay=0.0))
    schedule: ScheduleSection = field(default_factory=lambda: ScheduleSection(type="linear", min_lr_ratio=0.0))
    training: SFTTrainingSection = field(default_factory=SFTTrainingSection)
    export: ExportSection = field(default_factory=ExportSection)
    source_path: str | None = None

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("source_path")
        data["optimizer"]["betas"] = list(data["optimizer"]["betas"])
        return data


@dataclass
class DPORecipe(SFTRecipe):
    """An SFT recipe plus the `dpo` section; `data.sources` hold preference records (prompt, chosen, rejected)."""

    dpo: DPOSection = field(default_factory=DPOSection)


SECTIONS = {"model": SFTModelSection, "data": SFTDataSection, "lora": LoraSection, "optimizer": OptimizerSection,
            "schedule": ScheduleSection, "training": SFTTrainingSection, "export": ExportSection}
DPO_SECTIONS = {**SECTIONS, "dpo": DPOSection}


def _recipe_from_dict(raw: dict, source_path: str | None, recipe_class: type, sections_of: dict, kind: str):
    if not isinstance(raw, dict):
        raise RecipeError(f"an {kind} recipe must be a mapping of sections")
    known = set(sections_of) | {"tokenizer", "chat_format"}
    unknown = set(raw) - known
    if unknown:
        raise RecipeError(f"unknown {kind} recipe sections {sorted(unknown)}; known: {sorted(known)}")
    defaults = recipe_class()
    sections = {}
    for name, cls in sections_of.items():
        values = {**dataclasses.asdict(getattr(defaults, name)), **(raw.get(name) or {})}
        sections[name] = _build(cls, values, name)
    recipe = recipe_class(tokenizer=raw.get("tokenizer"), chat_format=raw.get("chat_format") or "auto",
                          source_path=source_path, **sections)
    validate_sft(recipe)
    return recipe


def sft_recipe_from_dict(raw: dict, source_path: str | None = None) -> SFTRecipe:
    return _recipe_from_dict(raw, source_path, SFTRecipe, SECTIONS, "SFT")


def dpo_recipe_from_dict(raw: dict, source_path: str | None = None) -> DPORecipe:
    recipe = _recipe_from_dict(raw, source_path, DPORecipe, DPO_SECTIONS, "DPO")
    dpo = recipe.dpo
    if dpo.beta <= 0:
        raise RecipeError(f"dpo.beta={dpo.beta} must be positive")
    if dpo.loss_type not in DPO_LOSSES:
        raise RecipeError(f"dpo.loss_type={dpo.loss_type!r}; choose one of {DPO_LOSSES}")
    if not 0 <= dpo.label_smoothing < 0.5:
        raise RecipeError(f"dpo.label_smoothing={dpo.label_smoothing} must be in [0, 0.5)")
    if recipe.data.packing:
        raise RecipeError("data.packing: DPO rows are prompt + chosen/rejected pairs and are not packed; set false")
    if dpo.ref_model is not None and not Path(dpo.ref_model).exists():
        raise RecipeError(f"dpo.ref_model: no folder {dpo.ref_model!r} (or null: the starting model itself)")
    if dpo.ref_model is None and recipe.model.init_from is None and not recipe.lora.enabled:
        raise RecipeError("dpo.ref_model: full DPO without model.init_from has no starting checkpoint to use as the "
                          "reference; give model.init_from, dpo.ref_model, or enable LoRA")
    return recipe


def validate_sft(recipe: SFTRecipe) -> None:
    model, data, lora, training = recipe.model, recipe.data, recipe.lora, recipe.training
    if model.init_from is None:
        if model.family not in PRESETS:
            raise RecipeError(f"model.family: unknown family {model.family!r}; choose one of {sorted(PRESETS)}")
        if model.preset not in PRESETS[model.family]:
            raise RecipeError(f"model.preset: {model.family} has no preset {model.preset!r}")
    if model.quantization not in QUANTIZATION_MODES:
        raise RecipeError(f"model.quantization={model.quantization!r}; choose one of {QUANTIZATION_MODES}")
    if model.quantization != "none" and not lora.enabled:
        raise RecipeError("model.quantization: a quantized model can only be fine-tuned with LoRA (lora.enabled)")
    if model.quantization != "none" and model.init_from is None:
        raise RecipeError("model.quantization: quantized loading needs model.init_from (a checkpoint folder)")
    if model.dtype not in ("float32", "bfloat16", "float16"):
        raise RecipeError(f"model.dtype={model.dtype!r}; choose float32, bfloat16 or float16")
    if recipe.chat_format != "auto" and recipe.chat_format not in CHAT_FORMATS:
        raise RecipeError(f"chat_format={recipe.chat_format!r}; choose auto or one of {sorted(CHAT_FORMATS)}")
    if not data.sources:
        raise RecipeError("data.sources: at least one source is needed")
    for index, source in enumerate(data.sources):
        if not isinstance(source, dict) or "name" not in source:
            raise RecipeError(f"data.sources[{index}]: a mapping with a 'name' is needed")
        if not (source.get("path") or source.get("paths") or source.get("dataset")):
            raise RecipeError(f"data.sources[{index}] ({source['name']}): give 'path(s)' or 'dataset'")
    if data.max_length < 8:
        raise RecipeError(f"data.max_length={data.max_length} is too small")
    if data.on_bad_sample not in BAD_SAMPLE_POLICIES:
        raise RecipeError(f"data.on_bad_sample={data.on_bad_sample!r}; choose one of {BAD_SAMPLE_POLICIES}")
    if data.seq_len is not None and data.seq_len < data.max_length:
        raise RecipeError(f"data.seq_len={data.seq_len} must be at least data.max_length={data.max_length}")
    if not 0 <= data.eval_fraction < 1:
        raise RecipeError(f"data.eval_fraction={data.eval_fraction} must be in [0, 1)")
    if lora.enabled:
        if lora.r < 1 or lora.alpha <= 0 or not 0 <= lora.dropout < 1:
            raise RecipeError("lora: r >= 1, alpha > 0 and dropout in [0, 1) are needed")
        if not lora.target_modules:
            raise RecipeError("lora.target_modules: name at least one module")
    if training.max_steps == 0 or training.max_steps < -1:
        raise RecipeError("training.max_steps must be positive, or -1 to run num_epochs")
    if training.max_steps == -1 and training.num_epochs <= 0:
        raise RecipeError("training.num_epochs must be positive")
    if training.per_device_batch_size < 1 or training.gradient_accumulation_steps < 1:
        raise RecipeError("training.per_device_batch_size and gradient_accumulation_steps must be at least 1")
    if training.precision not in ("fp32", "bf16", "fp16"):
        raise RecipeError(f"training.precision={training.precision!r}; choose fp32, bf16 or fp16")
    if training.save_steps < 1 or training.logging_steps < 1:
        raise RecipeError("training.save_steps and training.logging_steps must be at least 1")
    if training.eval_steps is not None and (training.eval_steps < 1 or data.eval_fraction == 0):
        raise RecipeError("training.eval_steps needs data.eval_fraction > 0 and a positive value")
    if recipe.optimizer.lr <= 0:
        raise RecipeError(f"optimizer.lr={recipe.optimizer.lr} must be positive")


def load_sft_recipe(recipe, overrides=None) -> SFTRecipe:
    """A validated SFTRecipe from a path, a shipped name (e.g. "sft_lora"), a mapping or an SFTRecipe, with
    `overrides` (`["training.max_steps=20"]` or a dotted dict) applied."""
    if isinstance(recipe, SFTRecipe):
        return sft_recipe_from_dict(apply_overrides(recipe.to_dict(), overrides), recipe.source_path)
    source_path, raw = read_recipe_source(recipe, kind="SFT recipe", listed="sft_*.yaml")
    return sft_recipe_from_dict(apply_overrides(raw or {}, overrides), source_path)


def load_dpo_recipe(recipe, overrides=None) -> DPORecipe:
    """A validated DPORecipe from a path, a shipped name (e.g. "dpo_lora"), a mapping or a DPORecipe, with
    `overrides` applied."""
    if isinstance(recipe, DPORecipe):
        return dpo_recipe_from_dict(apply_overrides(recipe.to_dict(), overrides), recipe.source_path)
    source_path, raw = read_recipe_source(recipe, kind="DPO recipe", listed="dpo_*.yaml")
    return dpo_recipe_from_dict(apply_overrides(raw or {}, overrides), source_path)


__all__ = ["DPORecipe", "DPOSection", "SFTRecipe", "dpo_recipe_from_dict", "load_dpo_recipe", "load_sft_recipe",
           "sft_recipe_from_dict"]
