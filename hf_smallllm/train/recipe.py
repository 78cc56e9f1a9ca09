"""Training recipes: one YAML file that drives a pretraining run (the engine in `engine.py`).

A recipe has the sections `model`, `tokenizer`, `data`, `optimizer`, `schedule`, `training`, `stability` (optional
training-stability measures, see `stability.py`), plus optional
extension sections (`publish`, `domain_eval`; see `extensions.py`). Every field is documented on the dataclass
that holds it; unknown keys, wrong types and inconsistent values fail at load time with the path of the field
(`data.sources[1].weight`). Values can be overridden from the command line as `--set training.max_steps=50`
(the value is parsed as YAML: numbers, booleans, lists), list entries by index: `--set
stages[2].training.context_parallel=1`.

A recipe may also be cut into `stages` (TinyLlama v1.1's general pretraining, domain continual pretraining and
cooldown; Skywork-13B's two stages): each stage runs `steps` optimizer steps and may set the keys in `STAGE_KEYS`
(its batch, data mix, row length, packing, accumulation, context-parallel size and lr segment); every key it
leaves out is the base recipe's. A stage that sets `schedule` or `optimizer.lr` runs its own lr segment over its own
steps; the others follow the run-wide `schedule`, which spans all stages. docs/pretraining.md describes the format.

Shipped recipes live in `training/recipes/` and, for use after a wheel install, in
`hf_smallllm/resources/recipes/`; `load_recipe("tiny-tinyllama")` finds a shipped recipe by name.
"""

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data.documents import DocumentFilter, check_source_name
from ..errors import UsageFileNotFoundError, UsageValueError
from ..families import PRESETS
from .extensions import RECIPE_SECTIONS

RECIPES_DIR = Path(__file__).parents[1] / "resources" / "recipes"
LR_SCHEDULES = ("cosine", "linear", "constant", "cosine_then_constant")
PRECISIONS = ("fp32", "bf16", "fp16")
PARALLELISMS = ("auto", "ddp", "fsdp2", "zero1", "zero2", "zero3")


class RecipeError(UsageValueError):
    """A recipe that cannot run, with the path of the offending field (a `ValueError` too)."""


# What a stage may set, per section (anything else is the same for the whole run). A key added here must be honoured
# per stage by the engine (`Stage` carries the resolved sections; build_stream, the lr schedule and the step read
# them): parallelism, precision and the model are built once per run, so they cannot change between stages.
STAGE_KEYS = {
    "data": ("mixture", "seq_len", "sequence_length", "tokens_per_step", "packing"),
    "schedule": ("type", "warmup_steps", "min_lr_ratio", "decay_until"),
    "optimizer": ("lr",),
    "training": ("gradient_accumulation_steps", "context_parallel"),
}
STAGE_FIELDS = ("name", "steps", *STAGE_KEYS)


@dataclass
class ModelSection:
    family: str = "tinyllama"  # tinyllama | geb | chuxin | btlm | skywork
    preset: str = "tiny"  # a preset of the family (published, tiny, small, ...)
    config: dict = field(default_factory=dict)  # config field overrides, e.g. {num_hidden_layers: 4}
    init_from: str | None = None  # a checkpoint to continue from (continued pretraining) instead of random init
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    vocab_from_tokenizer: bool = True  # set vocab_size and special-token ids from the tokenizer


@dataclass
class DataSection:
    sources: list[dict] = field(default_factory=list)  # DocumentSource fields: name, paths | dataset, split_by, ...
    # (a source may also name `prepared: FOLDER`: read its token shards from there instead of tokenizing)
    prepared: str | None = None  # a folder from `hf-smallllm data prepare` holding every source's token shards
    mixture: list[dict] | None = None  # MixtureSchedule phases; default: one phase with each source's `weight`
    seq_len: int | None = None  # a constant row length, or
    sequence_length: list[dict] | None = None  # SequenceLengthSchedule phases [{until, seq_len}]
    tokens_per_step: int = 4096  # global tokens per optimizer step (rows x seq_len x accumulation x processes)
    packing: str = "document"  # document (positions restart, block-diagonal attention) | causal (TinyLlama)
    add_bos: bool = False  # prepend BOS to every document (most of these families train without)
    flash_attn_kwargs: bool = False  # add cu_seq_lens for flash-attn's varlen kernel to every batch
    tokenize_batch: int = 64


@dataclass
class OptimizerSection:
    lr: float = 3e-4  # peak learning rate (muP: the base lr of the hidden matrices' groups before scaling)
    betas: tuple = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1  # not applied to norms and biases
    max_grad_norm: float = 1.0  # gradient clipping; 0 disables
    mup: bool = False  # muP learning-rate groups (needs a config with mup_base_hidden_size)


@dataclass
class ScheduleSection:
    type: str = "cosine"  # cosine | linear | constant | cosine_then_constant
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # final lr as a fraction of the peak (cosine, linear, cosine_then_constant)
    decay_until: float = 1.0  # cosine_then_constant: fraction of training where the decay ends and lr stays


@dataclass
class StabilitySection:
    """Training-stability measures for any family (what they do and where they come from: `stability.py`)."""

    embedding_grad_shrink: float | None = None  # alpha in (0, 1]: GLM-130B's embedding-gradient shrink; None = off
    skip_loss_spikes: bool = False  # drop the update of a step whose loss spikes above the recent mean
    spike_window: int = 100  # steps in the running mean (no step is skipped before it is full)
    spike_factor: float = 1.5  # a step is a spike when its loss > spike_factor x that mean
    max_consecutive_skips: int = 10  # after this many skips in a row the next step is applied and the window restarts


@dataclass
class TrainingSection:
    output_dir: str = "runs/pretrain"
    max_steps: int = 100
    gradient_accumulation_steps: int = 1
    precision: str = "fp32"  # fp32 | bf16 (mixed precision via autocast) | fp16
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 50  # checkpoint every N steps (and at the end)
    save_total_limit: int | None = None  # keep at most N checkpoints (the newest); None keeps all
    # auto (what the launcher set up: DDP for several processes, FSDP2/ZeRO from an accelerate config) | ddp | fsdp2 |
    # zero1 | zero2 | zero3; a request that cannot be honoured stops the run (train/parallel.py)
    parallelism: str = "auto"
    allow_fallback: bool = False  # run anyway (with a warning) when the requested parallelism is not in effect
    # ranks that share one sequence, each holding a contiguous slice of every row (context parallelism through
    # DeepSpeed's Ulysses attention, train/context_parallel.py); 1 = off. Must divide the processes, the heads and
    # every row length; a stage may set its own (long-context stages split only their longest rows)
    context_parallel: int = 1
    tensorboard: bool = True
    progress_bar: bool = True


@dataclass
class Stage:
    """One stage of a run, resolved: the base recipe's sections with the stage's keys applied."""

    name: str
    first_step: int  # the run's step (0-based) where the stage begins
    steps: int
    data: "DataSection"
    training: "TrainingSection"
    schedule: "ScheduleSection | None"  # the stage's own lr segment, or None: the run-wide schedule goes on
    lr: float  # peak lr of the stage's own segment (the run's optimizer.lr when it sets none)

    @property
    def seq_len_phases(self) -> list[dict]:
        return seq_len_phases(self.data)

    @property
    def mixture_phases(self) -> list[dict]:
        return mixture_phases(self.data)


def seq_len_phases(data: "DataSection") -> list[dict]:
    """The row-length phases of a data section: its `sequence_length`, or one phase of its `seq_len`."""
    return data.sequence_length or [{"until": 1.0, "seq_len": data.seq_len}]


def mixture_phases(data: "DataSection") -> list[dict]:
    """The mixture phases of a data section: its `mixture`, or one phase of the sources' `weight`s."""
    if data.mixture:
        return data.mixture
    return [{"until": 1.0, "weights": {s["name"]: s.get("weight", 1.0) for s in data.sources}}]


@dataclass
class Recipe:
    model: ModelSection = field(default_factory=ModelSection)
    tokenizer: str | None = None  # a tokenizer folder (AutoTokenizer.from_pretrained)
    data: DataSection = field(default_factory=DataSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    stability: StabilitySection = field(default_factory=StabilitySection)
    extensions: dict = field(default_factory=dict)  # publish / domain_eval sections, passed through as dicts
    stages: list[dict] = field(default_factory=list)  # as written; `stage_plans` resolves them
    source_path: str | None = None

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("source_path")
        extensions = data.pop("extensions")
        data.update(extensions)
        data["optimizer"]["betas"] = list(data["optimizer"]["betas"])
        if not data["stages"]:
            del data["stages"]
        return data

    @property
    def stage_plans(self) -> list[Stage]:
        """The run's stages, resolved; a recipe without `stages` is one stage ("main") of the whole run."""
        if not self.stages:
            return [Stage("main", 0, self.training.max_steps, self.data, self.training, None, self.optimizer.lr)]
        return resolve_stages(self)

    @property
    def seq_len_phases(self) -> list[dict]:
        return seq_len_phases(self.data)

    @property
    def mixture_phases(self) -> list[dict]:
        return mixture_phases(self.data)


SECTIONS = {"model": ModelSection, "data": DataSection, "optimizer": OptimizerSection, "schedule": ScheduleSection,
            "training": TrainingSection, "stability": StabilitySection}


# keys of earlier versions that are gone, with what to do instead
REMOVED_KEYS = {
    "training.entry": "every pretraining run goes through one engine now (the Trainer entry point was removed, see "
                      "docs/pretraining.md); delete the key, and use training.parallelism to ask for FSDP2 or ZeRO",
}


def _build(cls, values: dict, path: str):
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in values:
        if f"{path}.{name}" in REMOVED_KEYS:
            raise RecipeError(f"{path}.{name}: {REMOVED_KEYS[f'{path}.{name}']}")
    unknown = set(values) - set(fields)
    if unknown:
        raise RecipeError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        expected = type(default) if default is not None else None
        if expected in (int, float) and isinstance(value, bool):
            raise RecipeError(f"{path}.{name}: expected a number, got {value!r}")
        if expected is float and isinstance(value, int):
            value = float(value)
        if expected is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if expected is tuple and isinstance(value, list):
            value = tuple(value)
        if expected is not None and value is not None and not isinstance(value, expected):
            raise RecipeError(f"{path}.{name}: expected {expected.__name__}, got {value!r}")
        kwargs[name] = value
    return cls(**kwargs)


def recipe_from_dict(raw: dict, source_path: str | None = None) -> Recipe:
    """Validate a parsed recipe mapping."""
    if not isinstance(raw, dict):
        raise RecipeError("a recipe must be a mapping of sections")
    known = set(SECTIONS) | {"tokenizer", "stages"} | set(RECIPE_SECTIONS)
    unknown = set(raw) - known
    if unknown:
        raise RecipeError(f"unknown recipe sections {sorted(unknown)}; known: {sorted(known)}")
    sections = {name: _build(cls, raw.get(name) or {}, name) for name, cls in SECTIONS.items()}
    tokenizer = raw.get("tokenizer")
    if isinstance(tokenizer, dict):
        tokenizer = tokenizer.get("path")
    stages = raw.get("stages")
    if stages is not None:
        if not isinstance(stages, list) or not stages:
            raise RecipeError("stages: a list of at least one stage (a mapping with 'steps'), or leave the key out")
        total = _stage_steps(stages)
        given = (raw.get("training") or {}).get("max_steps")
        if given is not None and given != total:
            raise RecipeError(f"training.max_steps={given} but the stages' steps sum to {total}: a staged run is as "
                              "long as its stages (change stages[*].steps, or leave max_steps out)")
        sections["training"].max_steps = total
    recipe = Recipe(tokenizer=tokenizer, extensions={k: raw[k] for k in RECIPE_SECTIONS if raw.get(k)},
                    stages=copy.deepcopy(stages or []), source_path=source_path, **sections)
    validate(recipe)
    return recipe


def _stage_steps(stages: list) -> int:
    total = 0
    for index, stage in enumerate(stages):
        if not isinstance(stage, dict):
            raise RecipeError(f"stages[{index}]: expected a mapping with 'steps', got {stage!r}")
        steps = stage.get("steps")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise RecipeError(f"stages[{index}].steps: a whole number of optimizer steps >= 1 is needed, got {steps!r}")
        total += steps
    return total


def resolve_stages(recipe: Recipe) -> list[Stage]:
    """The recipe's `stages` with every key checked (one line naming the field on a mistake)."""
    resolved, first, names = [], 0, set()
    for index, raw in enumerate(recipe.stages):
        path = f"stages[{index}]"
        unknown = sorted(set(raw) - set(STAGE_FIELDS))
        if unknown:
            raise RecipeError(f"{path}: unknown keys {unknown}; a stage has {list(STAGE_FIELDS)}")
        name = raw.get("name", f"stage{index + 1}")
        if not isinstance(name, str) or not name or name in names:
            raise RecipeError(f"{path}.name: {name!r} must be a non-empty text, unique among the stages")
        names.add(name)
        sections = {}
        for section, allowed in STAGE_KEYS.items():
            values = raw.get(section) or {}
            if not isinstance(values, dict):
                raise RecipeError(f"{path}.{section}: expected a mapping, got {values!r}")
            known = {f.name for f in dataclasses.fields(SECTIONS[section])}
            for key in values:
                if key not in known:
                    raise RecipeError(f"{path}.{section}: unknown key {key!r}; a stage may set {section}.{{"
                                      f"{', '.join(allowed)}}}")
                if key not in allowed:
                    raise RecipeError(f"{path}.{section}.{key}: the same for every stage (the engine builds it once "
                                      f"per run); a stage may set {section}.{{{', '.join(allowed)}}}")
            sections[section] = values
        data_values = dataclasses.asdict(recipe.data)
        if "seq_len" in sections["data"] or "sequence_length" in sections["data"]:
            data_values.update(seq_len=None, sequence_length=None)  # the stage's row length replaces the base's
        data = _build(DataSection, {**data_values, **sections["data"]}, f"{path}.data")
        training = _build(TrainingSection, {**dataclasses.asdict(recipe.training), **sections["training"],
                                            "max_steps": raw["steps"]}, f"{path}.training")
        own_segment = bool(sections["schedule"] or sections["optimizer"])
        schedule = (_build(ScheduleSection, {**dataclasses.asdict(recipe.schedule), **sections["schedule"]},
                           f"{path}.schedule") if own_segment else None)
        lr = float(sections["optimizer"].get("lr", recipe.optimizer.lr))
        stage = Stage(name, first, raw["steps"], data, training, schedule, lr)
        _validate_stage(stage, path)
        resolved.append(stage)
        first += stage.steps
    return resolved


def _validate_stage(stage: Stage, path: str) -> None:
    from ..data.schedules import MixtureSchedule, SequenceLengthSchedule

    data = stage.data
    _validate_rows(data, f"{path}.data")
    if stage.training.gradient_accumulation_steps < 1:
        raise RecipeError(f"{path}.training.gradient_accumulation_steps must be at least 1")
    _validate_context_parallel(stage.training.context_parallel, data, f"{path}.training.context_parallel")
    names = [source["name"] for source in data.sources]
    try:
        MixtureSchedule(stage.mixture_phases, stage.steps, sources=names)
    except ValueError as err:
        raise RecipeError(f"{path}.data.mixture: {err}") from None
    try:
        SequenceLengthSchedule(stage.seq_len_phases, stage.steps, data.tokens_per_step)
    except ValueError as err:
        raise RecipeError(f"{path}.data: {err}") from None
    if stage.lr <= 0:
        raise RecipeError(f"{path}.optimizer.lr={stage.lr} must be positive")
    if stage.schedule is not None:
        _validate_schedule(stage.schedule, stage.steps, f"{path}.schedule", f"{path}.steps")


def _validate_rows(data: "DataSection", path: str) -> None:
    if (data.seq_len is None) == (data.sequence_length is None):
        raise RecipeError(f"{path}: give exactly one of 'seq_len' or 'sequence_length' (a schedule)")
    for phase in seq_len_phases(data):
        if not isinstance(phase, dict) or not isinstance(phase.get("seq_len"), int) or phase["seq_len"] < 2:
            raise RecipeError(f"{path}: every row length must be a whole number >= 2, got {phase!r}")
        if data.tokens_per_step % phase["seq_len"]:
            raise RecipeError(f"{path}.tokens_per_step={data.tokens_per_step} is not a multiple of the row length "
                              f"{phase['seq_len']}")
    if data.packing not in ("document", "causal"):
        raise RecipeError(f"{path}.packing={data.packing!r}; choose 'document' or 'causal'")


def _validate_context_parallel(size: int, data: "DataSection", path: str) -> None:
    if size < 1:
        raise RecipeError(f"{path}={size} must be at least 1 (1 = off)")
    for phase in seq_len_phases(data):
        if phase["seq_len"] % size:
            raise RecipeError(f"{path}={size} does not divide the row length {phase['seq_len']}")


def _validate_schedule(schedule: "ScheduleSection", steps: int, path: str, steps_name: str) -> None:
    if schedule.type not in LR_SCHEDULES:
        raise RecipeError(f"{path}.type={schedule.type!r}; choose one of {LR_SCHEDULES}")
    if not 0 <= schedule.min_lr_ratio <= 1:
        raise RecipeError(f"{path}.min_lr_ratio={schedule.min_lr_ratio} must be in [0, 1]")
    if not 0 < schedule.decay_until <= 1:
        raise RecipeError(f"{path}.decay_until={schedule.decay_until} must be in (0, 1]")
    if schedule.warmup_steps < 0 or schedule.warmup_steps >= steps:
        raise RecipeError(f"{path}.warmup_steps={schedule.warmup_steps} must be in [0, {steps_name}={steps})")


def validate(recipe: Recipe) -> None:
    model, data, opt, schedule, training = (recipe.model, recipe.data, recipe.optimizer, recipe.schedule,
                                            recipe.training)
    if model.init_from is None:
        if model.family not in PRESETS:
            raise RecipeError(f"model.family: unknown family {model.family!r}; choose one of {sorted(PRESETS)}")
        if model.preset not in PRESETS[model.family]:
            raise RecipeError(f"model.preset: {model.family} has no preset {model.preset!r}; "
                              f"choose one of {sorted(PRESETS[model.family])}")
    if not data.sources:
        raise RecipeError("data.sources: at least one source is needed")
    names = []
    for index, source in enumerate(data.sources):
        if not isinstance(source, dict) or "name" not in source:
            raise RecipeError(f"data.sources[{index}]: a mapping with a 'name' is needed")
        try:
            check_source_name(source["name"])
        except ValueError as err:
            raise RecipeError(f"data.sources[{index}].name: {err}") from None
        if not source.get("paths") and not source.get("dataset") and not (source.get("prepared") or data.prepared):
            raise RecipeError(f"data.sources[{index}] ({source['name']}): give 'paths' or 'dataset' (or 'prepared' "
                              "token shards)")
        filters = source.get("filters") or []
        if not isinstance(filters, list):
            raise RecipeError(f"data.sources[{index}].filters: a list of {{field, include|exclude}}, got {filters!r}")
        for number, spec in enumerate(filters):
            try:
                DocumentFilter.from_spec(spec, f"data.sources[{index}].filters[{number}]")
            except ValueError as err:
                raise RecipeError(str(err)) from None
        weight = source.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or weight < 0:
            raise RecipeError(f"data.sources[{index}].weight must be a number >= 0, got {weight!r}")
        names.append(source["name"])
    if len(set(names)) != len(names):
        raise RecipeError(f"data.sources: names must be unique, got {names}")
    _validate_rows(data, "data")
    if opt.lr <= 0:
        raise RecipeError(f"optimizer.lr={opt.lr} must be positive")
    if len(opt.betas) != 2 or not all(0 <= b < 1 for b in opt.betas):
        raise RecipeError(f"optimizer.betas={list(opt.betas)} must be two numbers in [0, 1)")
    if training.max_steps < 1:
        raise RecipeError(f"training.max_steps={training.max_steps} must be at least 1")
    _validate_schedule(schedule, training.max_steps, "schedule", "training.max_steps")
    if training.gradient_accumulation_steps < 1:
        raise RecipeError("training.gradient_accumulation_steps must be at least 1")
    if training.precision not in PRECISIONS:
        raise RecipeError(f"training.precision={training.precision!r}; choose one of {PRECISIONS}")
    if training.parallelism not in PARALLELISMS:
        raise RecipeError(f"training.parallelism={training.parallelism!r}; choose one of {PARALLELISMS}")
    _validate_context_parallel(training.context_parallel, data, "training.context_parallel")
    if training.save_steps < 1 or training.logging_steps < 1:
        raise RecipeError("training.save_steps and training.logging_steps must be at least 1")
    _validate_stability(recipe.stability, opt, training)
    if recipe.stages:
        resolve_stages(recipe)


def _validate_stability(stability: StabilitySection, opt: OptimizerSection, training: TrainingSection) -> None:
    alpha = stability.embedding_grad_shrink
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1):
        raise RecipeError(f"stability.embedding_grad_shrink={alpha!r} must be a number in (0, 1] (the share of the "
                          "embedding gradient kept; GLM-130B uses 0.1) or null to turn it off")
    if stability.spike_window < 1:
        raise RecipeError(f"stability.spike_window={stability.spike_window} must be at least 1 step")
    if not stability.spike_factor > 1:
        raise RecipeError(f"stability.spike_factor={stability.spike_factor} must be greater than 1")
    if stability.max_consecutive_skips < 1:
        raise RecipeError(f"stability.max_consecutive_skips={stability.max_consecutive_skips} must be at least 1")
    if stability.skip_loss_spikes and training.precision == "fp16" and not opt.max_grad_norm:
        # a skipped step drops its gradients; fp16's loss scaler must have unscaled them (clipping does) beforehand
        raise RecipeError("stability.skip_loss_spikes with training.precision=fp16 needs optimizer.max_grad_norm > 0")


_INDEXED_KEY = re.compile(r"^([A-Za-z_]\w*)\[(\d+)\]$")


def apply_overrides(raw: dict, overrides: list[str] | dict | None) -> dict:
    """Apply `key.sub=value` overrides (YAML values) or a nested/dotted dict of them to a parsed recipe. A key may
    index a list that the recipe has: `stages[2].training.context_parallel=1`, `data.sources[0].weight=0.5`."""
    raw = copy.deepcopy(raw)
    if not overrides:
        return raw
    items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides]
    for dotted, value in items:
        target = raw
        keys = dotted.split(".")
        for depth, key in enumerate(keys):
            last = depth == len(keys) - 1
            indexed = _INDEXED_KEY.match(key)
            if indexed:
                name, index = indexed.group(1), int(indexed.group(2))
                items_here = target.get(name)
                if not isinstance(items_here, list) or index >= len(items_here):
                    count = len(items_here) if isinstance(items_here, list) else 0
                    raise RecipeError(f"override {dotted}: {key} does not exist (the recipe's {name} has {count} "
                                      f"entries, indexed from 0)")
                if last:
                    items_here[index] = value
                    break
                target = items_here[index]
            elif last:
                target[key] = value
                break
            else:
                target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise RecipeError(f"override {dotted}: {key} is not a section")
    return raw


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise RecipeError(f"override {text!r} must look like section.key=value")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def find_recipe(name_or_path: str | Path, *, kind: str = "recipe", listed: str = "*.yaml") -> Path:
    """A recipe file by path, or a shipped recipe by name (e.g. "tiny-tinyllama", "sft_lora"; pretraining and SFT
    recipes share RECIPES_DIR). A miss names the shipped recipes whose file names match `listed`."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = RECIPES_DIR / f"{name_or_path}.yaml"
    if shipped.exists():
        return shipped
    names = sorted(p.stem for p in RECIPES_DIR.glob(listed))
    raise UsageFileNotFoundError(f"no {kind} {str(name_or_path)!r}: not a file and not a shipped recipe "
                                 f"({', '.join(names)})")


def load_recipe(recipe: str | Path | dict | Recipe, overrides=None) -> Recipe:
    """A validated Recipe from a path, a shipped recipe name, a parsed mapping, or a Recipe (overrides applied)."""
    if isinstance(recipe, Recipe):
        return recipe_from_dict(apply_overrides(recipe.to_dict(), overrides), recipe.source_path)
    source_path, raw = read_recipe_source(recipe)
    return recipe_from_dict(apply_overrides(raw or {}, overrides), source_path)


def read_recipe_source(recipe, **find_options) -> tuple[str | None, Any]:
    """(source path, parsed YAML) for a recipe given as a path or shipped name (located with `find_recipe`, which
    takes `find_options`), or (None, recipe) for an already parsed mapping."""
    if not isinstance(recipe, (str, Path)):
        return None, recipe
    source_path = str(find_recipe(recipe, **find_options))
    try:
        return source_path, yaml.safe_load(Path(source_path).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise RecipeError(f"{source_path}: not valid YAML ({err})") from err


__all__ = ["STAGE_KEYS", "Recipe", "RecipeError", "StabilitySection", "Stage", "apply_overrides", "find_recipe",
           "load_recipe", "read_recipe_source", "recipe_from_dict", "resolve_stages"]
