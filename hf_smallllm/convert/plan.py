"""Planning and streaming one conversion: every key and shape is accounted for before a tensor is read.

`plan_conversion` expands a layout's tensor table (`hf_smallllm.layouts`) for a config (one rule per
layer), works out which rules the config needs (from the tensors the target model has, built on the meta device), the
exact shape every source tensor must have, and the steps that turn source tensors into output tensors. Anything
wrong in the source (missing, unexpected or mis-shaped tensors) is collected and raised together as a
`CheckpointMismatchError` before anything is written.

`run_plan` then streams the source file by file: a step runs as soon as all its inputs were read (a fused tensor is
one input; the parts of a fused export may sit in different shards and wait in `pending` only until the last one
arrives), its outputs go to the sink, and nothing else is kept. Beyond conversions, steps also check what cannot be
converted but must hold: a stored copy of a tied head equals the embedding. A tensor the layout marks as derived
(BTLM's ALiBi slopes) is converted as stored, and computed from the config when a checkpoint lacks it.

`export_state_dict` applies the same table to a package state dict in memory (the native twin of a package model).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..errors import UsageValueError
from ..layouts import Layout, TensorRule
from ..models.attention_smallllm import alibi_slopes
from .checkpoint_files import TensorInfo

TO_PACKAGE = "to_package"
FROM_PACKAGE = "from_package"


def _stored_alibi_slopes(config) -> torch.Tensor:
    # BTLM stores the unscaled slopes as a [heads, 1] parameter; `alibi_scaling` is applied in the forward pass
    return alibi_slopes(config.num_attention_heads).view(-1, 1)


def owned(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor with storage of its own: safetensors refuses tensors that share memory (split views do),
    and a view would keep the whole fused source tensor alive."""
    tensor = tensor.contiguous()
    return tensor.clone() if tensor._is_view() else tensor


# `DerivedTensor.compute` (a layout table's name) -> config -> tensor
DERIVED_TENSORS: dict[str, Callable] = {"alibi_slopes": _stored_alibi_slopes}


class CheckpointMismatchError(UsageValueError):
    """The checkpoint does not have the tensors its layout and config call for; lists every problem at once."""

    def __init__(self, location: str, layout: str, missing: Sequence[str] = (), unexpected: Sequence[str] = (),
                 misshaped: Sequence[str] = (), problems: Sequence[str] = ()):
        self.missing, self.unexpected, self.misshaped = list(missing), list(unexpected), list(misshaped)
        self.problems = list(problems)
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {', '.join(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected: {', '.join(self.unexpected)}")
        if self.misshaped:
            parts.append(f"{len(self.misshaped)} mis-shaped: {', '.join(self.misshaped)}")
        parts.extend(self.problems)
        super().__init__(f"{location} does not match the {layout} layout for its config; nothing was written. "
                         + "; ".join(parts))


@dataclass
class Step:
    """Turns `inputs` (source keys) into `outputs` (output keys); a step without outputs is a check."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    run: Callable[[list[torch.Tensor]], list[torch.Tensor]]


@dataclass
class ConversionPlan:
    steps: list[Step]
    output_infos: dict[str, TensorInfo]
    dropped: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)


def model_tensors(model_class, config) -> tuple[dict[str, torch.Size], dict[str, str]]:
    """The tensors a checkpoint of `model_class(config)` stores (tied copies excluded) and the tied pairs
    {tied key: partner}, from a model on the meta device: no memory, and exactly the names and shapes transformers'
    loader will ask for."""
    with torch.device("meta"):
        model = model_class(config)
    tied = dict(getattr(model, "all_tied_weights_keys", None) or {})
    shapes = {key: tensor.shape for key, tensor in model.state_dict().items() if key not in tied}
    return shapes, tied


@dataclass(frozen=True)
class _ConcreteRule:
    source: str
    targets: tuple[str, ...]
    transform: str


def _fill_layer(name: str, layer: int | None) -> str:
    return name if layer is None else name.format(layer=layer)


def _expand(rules: Iterable[TensorRule], num_layers: int) -> list[_ConcreteRule]:
    concrete = []
    for rule in rules:
        layers = range(num_layers) if "{layer}" in rule.source else [None]
        for layer in layers:
            concrete.append(_ConcreteRule(_fill_layer(rule.source, layer),
                                          tuple(_fill_layer(t, layer) for t in rule.targets), rule.transform))
    return concrete


def plan_conversion(
    table: Layout,
    config,
    direction: str,
    source_infos: dict[str, TensorInfo],
    package_shapes: dict[str, torch.Size],
    tied: dict[str, str] | None = None,
    dtype: torch.dtype | None = None,
    location: str = "the checkpoint",
) -> ConversionPlan:
    """Plan converting a checkpoint with `source_infos` (foreign keys for `to_package`, package keys for
    `from_package`). `package_shapes` are the tensors of the package side (`model_tensors`), `tied` maps a tied
    key to its partner (a stored tied copy is checked, not converted). `dtype` casts floating outputs."""
    if direction not in (TO_PACKAGE, FROM_PACKAGE):
        raise ValueError(f"direction={direction!r}; expected {TO_PACKAGE!r} or {FROM_PACKAGE!r}")
    tied = tied or {}
    rules = _expand(table.tensors, config.num_hidden_layers)

    active, inactive = [], []
    for rule in rules:
        present = [t in package_shapes for t in rule.targets]
        if all(present):
            active.append(rule)
        elif any(present):
            raise ValueError(f"table {table.name}: rule {rule.source} -> {rule.targets} is only partly present in "
                             "the model; the table and the model disagree")
        else:
            inactive.append(rule)
    produced = {t for rule in active for t in rule.targets}
    not_covered = sorted(set(package_shapes) - produced)
    if not_covered:
        raise ValueError(f"the {table.name} layout has no place for these tensors of the model: {not_covered}")

    def foreign_shape(rule: _ConcreteRule) -> torch.Size:
        parts = [torch.empty(package_shapes[t], device="meta") for t in rule.targets]
        return rule.transform.from_package(parts, config).shape

    # What the source must hold: key -> shape, and how each key is used.
    required: dict[str, torch.Size] = {}
    steps: list[Step] = []
    output_infos: dict[str, TensorInfo] = {}
    problems: list[str] = []

    def out_dtype(source_dtype: torch.dtype) -> torch.dtype:
        return dtype if dtype is not None and source_dtype.is_floating_point else source_dtype

    if direction == TO_PACKAGE:
        for rule in active:
            required[rule.source] = foreign_shape(rule)
        # package tied key -> the foreign key that would hold it (e.g. lm_head.weight -> lm_head.weight)
        tied_sources = {}
        for rule in inactive:
            if all(t in tied for t in rule.targets):
                partner_rule = next((r for r in active if r.targets == tuple(tied[t] for t in rule.targets)), None)
                if partner_rule is not None:
                    tied_sources[rule.source] = partner_rule.source
    else:
        for key, shape in package_shapes.items():
            required[key] = shape
        tied_sources = {key: partner for key, partner in tied.items()}

    derived = {d.key: d for d in table.derived}
    dropped_patterns = [re.compile(p) for p in table.dropped]

    # a derived tensor the source lacks is computed from the config: {missing key: the foreign key it stands for}
    if direction == TO_PACKAGE:
        stand_ins = {key: key for key in derived if key in required and key not in source_infos}
    else:
        stand_ins = {rule.targets[0]: rule.source for rule in active
                     if rule.source in derived and len(rule.targets) == 1 and rule.targets[0] not in source_infos}
    missing = sorted(k for k in required if k not in source_infos and k not in stand_ins)
    misshaped, unexpected, dropped, checked = [], [], [], []
    for key, info in source_infos.items():
        if key in required:
            if tuple(info.shape) != tuple(required[key]):
                misshaped.append(f"{key} {list(info.shape)} (expected {list(required[key])})")
            elif not info.dtype.is_floating_point:
                problems.append(f"{key} has dtype {info.dtype}, expected a floating-point tensor")
        elif key in tied_sources and tied_sources[key] in source_infos:
            partner = tied_sources[key]
            if tuple(info.shape) != tuple(source_infos[partner].shape):
                misshaped.append(f"{key} {list(info.shape)} (expected {list(source_infos[partner].shape)}, "
                                 f"a copy of the tied {partner})")
            else:
                steps.append(Step((key, partner), (), _check_equal(key, partner)))
                checked.append(key)
        elif direction == TO_PACKAGE and any(p.fullmatch(key) for p in dropped_patterns):
            dropped.append(key)
        else:
            unexpected.append(key)
    if missing or misshaped or unexpected or problems:
        raise CheckpointMismatchError(location, table.name, missing, sorted(unexpected), sorted(misshaped), problems)

    # computed stand-ins take the checkpoint's dtype (its most common one)
    common = Counter(info.dtype for info in source_infos.values() if info.dtype.is_floating_point).most_common(1)
    reference_dtype = out_dtype(common[0][0] if common else torch.float32)
    for rule in active:
        if direction == TO_PACKAGE:
            inputs, outputs, stand_in = (rule.source,), rule.targets, rule.source in stand_ins
        else:
            inputs, outputs, stand_in = rule.targets, (rule.source,), rule.targets[0] in stand_ins
        if stand_in:
            value = DERIVED_TENSORS[derived[rule.source].compute](config).to(reference_dtype)
            steps.append(Step((), outputs, lambda _, value=value: [value]))
            output_infos[outputs[0]] = TensorInfo(tuple(value.shape), value.dtype)
            continue
        written = out_dtype(source_infos[inputs[0]].dtype)
        if direction == TO_PACKAGE:
            steps.append(Step(inputs, outputs, _split_step(rule, package_shapes, config, dtype)))
            for target in outputs:
                output_infos[target] = TensorInfo(tuple(package_shapes[target]), written)
        else:
            steps.append(Step(inputs, outputs, _fuse_step(rule, config, dtype)))
            output_infos[rule.source] = TensorInfo(tuple(foreign_shape(rule)), written)
    return ConversionPlan(steps, output_infos, sorted(dropped), sorted(checked))


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
        return tensor.to(dtype)
    return tensor


def _split_step(rule: _ConcreteRule, package_shapes, config, dtype):
    shapes = [package_shapes[t] for t in rule.targets]
    transform = rule.transform

    def run(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        return [owned(_cast(t, dtype)) for t in transform.to_package(tensors[0], shapes, config)]

    return run


def _fuse_step(rule: _ConcreteRule, config, dtype):
    transform = rule.transform

    def run(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        return [owned(_cast(transform.from_package(tensors, config), dtype))]

    return run


def _check_equal(key: str, partner: str):
    def run(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        if not torch.equal(tensors[0], tensors[1]):
            raise ValueError(f"{key} is stored but differs from {partner}: the config ties them "
                             "(tie_word_embeddings), so the stored head would be ignored; nothing was written")
        return []

    return run


def export_state_dict(table: Layout, config, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A package state dict in `table`'s names and layout, in memory (the native twin of a package model). Rules whose
    tensors the state lacks (biases of a bias-free model) are skipped; a tensor no rule covers is an error, so a table
    that misses a tensor cannot go unnoticed. Outputs may share storage with the inputs."""
    exported, used = {}, set()
    for rule in _expand(table.tensors, config.num_hidden_layers):
        if all(target in state for target in rule.targets):
            parts = [state[target] for target in rule.targets]
            exported[rule.source] = rule.transform.from_package(parts, config)
            used.update(rule.targets)
    left = sorted(set(state) - used)
    if left:
        raise ValueError(f"the {table.name} layout has no place for these tensors: {left}")
    return exported


def run_plan(
    plan: ConversionPlan,
    tensors: Iterable[tuple[str, torch.Tensor]],
    sink: Callable[[str, torch.Tensor], None],
    total: int | None = None,
    description: str = "converting",
    progress: bool = True,
) -> int:
    """Stream `tensors` through the plan's steps into `sink(key, tensor)`; returns the number of tensors written."""
    consumers: dict[str, list[int]] = defaultdict(list)
    for index, step in enumerate(plan.steps):
        for key in step.inputs:
            consumers[key].append(index)
    pending: dict[int, dict[str, torch.Tensor]] = defaultdict(dict)
    written = 0

    def finish(index: int, inputs: list[torch.Tensor]) -> None:
        nonlocal written
        step = plan.steps[index]
        for key, tensor in zip(step.outputs, step.run(inputs), strict=True):
            sink(key, tensor)
            written += 1

    for index, step in enumerate(plan.steps):
        if not step.inputs:
            finish(index, [])
    for key, tensor in tqdm(tensors, total=total, desc=description, unit="tensor", disable=not progress):
        for index in consumers.get(key, ()):
            step = plan.steps[index]
            if len(step.inputs) == 1:
                finish(index, [tensor])
                continue
            pending[index][key] = tensor
            if len(pending[index]) == len(step.inputs):
                inputs = pending.pop(index)
                finish(index, [inputs[k] for k in step.inputs])
    if pending:
        waiting = sorted(k for index in pending for k in plan.steps[index].inputs if k not in pending[index])
        raise RuntimeError(f"the checkpoint ended before these tensors were read: {waiting}")
    return written


__all__ = [
    "DERIVED_TENSORS",
    "FROM_PACKAGE",
    "TO_PACKAGE",
    "CheckpointMismatchError",
    "ConversionPlan",
    "Step",
    "export_state_dict",
    "model_tensors",
    "plan_conversion",
    "run_plan",
]
