"""The four conversions, each one function:

- `official_to_package`: a family's official Hugging Face checkpoint -> the package format;
- `package_to_official`: the package format -> the family's official layout (exact inverse of the above);
- `litgpt_to_package`: a TinyLlama lit-gpt training checkpoint (`iter-XXXXXX-ckpt.pth`) -> the package format;
- `package_to_native`: the package format -> a stock transformers `LlamaForCausalLM` (Llama-shaped configs) or
  `GlmForCausalLM` (GEB-shaped), loadable without hf_smallllm (vLLM, llama.cpp's converter, TGI).

All follow the same steps (`_convert`): read the config, plan every key and shape (a `CheckpointMismatchError` lists
all problems before anything is written), run the source model on the verification tokens, stream the tensors shard
by shard into sharded safetensors in a staging folder, write config / generation config / tokenizer files, run the
converted model on the same tokens, and only then move the folder into place. A failure anywhere leaves nothing
(and an existing output untouched).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig

from ..errors import UsageFileNotFoundError, UsageValueError
from ..families import FAMILIES, family_of, preset_config
from ..layouts import LITGPT, Layout
from ..models.configuration_smallllm import SmallLLMConfig
from . import configs
from .checkpoint_files import (
    CheckpointReader,
    ShardedSafetensorsWriter,
    check_output_path,
    copy_tokenizer_files,
    staged_output,
)
from .formats import (
    NATIVE_LAYOUTS,
    OFFICIAL_FORMATS,
    causal_lm_class,
    config_json_for,
    native_layout_for,
    official_format_for,
    run_package,
    runner_for,
)
from .plan import FROM_PACKAGE, TO_PACKAGE, model_tensors, plan_conversion, run_plan
from .remote_code import add_remote_code
from .verify import (
    DEFAULT_LENGTH,
    DEFAULT_TOLERANCE,
    LogitCheck,
    check_logits,
    logit_check_fields,
    logit_check_line,
    verification_ids,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_MAX_SHARD_SIZE = "2GB"


@dataclass
class ConversionReport:
    """What a conversion did; `summary()` is what the command line prints."""

    source: str
    output: str
    source_format: str
    target_format: str
    family: str
    tensors_read: int
    tensors_written: int
    files: tuple[str, ...]
    bytes_written: int
    seconds: float
    check: LogitCheck | None
    dropped: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"{self.source_format} -> {self.target_format} ({self.family}): {self.source} -> {self.output}",
            f"  {self.tensors_read} tensors read, {self.tensors_written} written to {len(self.files)} file(s), "
            f"{self.bytes_written / 2**20:,.1f} MiB, {self.seconds:.1f} s",
        ]
        if self.checked:
            lines.append(f"  checked and not stored (derived from the config): {', '.join(self.checked)}")
        if self.dropped:
            lines.append(f"  dropped (recomputed from the config): {', '.join(self.dropped)}")
        lines.extend(f"  note: {note}" for note in self.notes)
        lines.append(logit_check_line(self.check))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "check"}
        data["files"] = list(self.files)
        data.update(logit_check_fields(self.check))
        data["compared"] = None if self.check is None else self.check.compared
        return data


@dataclass(frozen=True)
class _Side:
    """One end of a conversion: where its checkpoint is and which model runs it."""

    path: Path
    label: str
    runner: Any


def _dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    if name is None or name == "auto":
        return None
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise UsageValueError(f"dtype={name!r}; choose one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def _checkpoint_dtype(infos, cast: torch.dtype | None) -> torch.dtype:
    if cast is not None:
        return cast
    common = Counter(i.dtype for i in infos.values() if i.dtype.is_floating_point).most_common(1)
    return common[0][0] if common else torch.float32


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UsageFileNotFoundError(f"{path} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UsageValueError(f"{path} is not valid JSON: {err}") from err


def _convert(
    *,
    reader: CheckpointReader,
    output: Path,
    table_layout: Layout,
    direction: str,
    config: SmallLLMConfig,
    source: _Side,
    write_support: Any,
    source_format: str,
    target_format: str,
    target_label: str,
    target_runner: Any,
    notes: list[str],
    dtype: str | torch.dtype | None,
    max_shard_size: int | str,
    verify: bool,
    tolerance: float,
    verify_length: int,
    overwrite: bool,
    progress: bool,
) -> ConversionReport:
    started = time.perf_counter()
    output = Path(output)
    check_output_path(output, [reader.location], overwrite)
    cast = _dtype(dtype)
    infos = reader.infos()
    package_shapes, tied = model_tensors(causal_lm_class(config), config)
    plan = plan_conversion(table_layout, config, direction, infos, package_shapes, tied, dtype=cast,
                           location=str(reader.location))
    config.dtype = _checkpoint_dtype(infos, cast)

    input_ids = verification_ids(config.vocab_size, config.max_position_embeddings, verify_length)
    source_logits = None
    if verify:  # before writing: a source that does not run fails early, and its model is freed before streaming
        source_logits = source.runner(source.path, config, input_ids, cast)

    with staged_output(output) as staging:
        writer = ShardedSafetensorsWriter(staging, max_shard_size)
        run_plan(plan, reader.tensors(), writer.add, total=len(infos),
                 description=f"{source_format} -> {target_format}", progress=progress)
        written = writer.close()
        write_support(staging)
        check = None
        if verify:
            check = check_logits(lambda ids: source_logits, lambda ids: target_runner(staging, config, ids, None),
                                 input_ids, tolerance, f"{source.label} vs {target_label}")
    return ConversionReport(
        source=str(reader.location), output=str(output), source_format=source_format, target_format=target_format,
        family=family_of(config), tensors_read=len(infos), tensors_written=written.num_tensors, files=written.files,
        bytes_written=written.total_bytes, seconds=time.perf_counter() - started, check=check,
        dropped=plan.dropped, checked=plan.checked, notes=notes,
    )


def _write_support(config: SmallLLMConfig | dict[str, Any], generation, tokenizer_source: Path | None,
                   notes: list[str]):
    """What goes next to the tensors: config.json (a package config, saved by transformers, or a foreign layout's
    config dict), generation_config.json and the tokenizer files of `tokenizer_source`."""
    def write(staging: Path) -> None:
        if isinstance(config, SmallLLMConfig):
            config.architectures = [causal_lm_class(config).__name__]
            config.save_pretrained(staging)
            add_remote_code(staging)  # the model files and auto_map a model's save_pretrained would write
        else:
            (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        generation.save_pretrained(staging)
        if tokenizer_source is not None:
            copied = copy_tokenizer_files(tokenizer_source, staging)
            if copied:
                notes.append(f"tokenizer files copied: {', '.join(copied)}")

    return write


def _common(dtype, max_shard_size, verify, tolerance, verify_length, overwrite, progress) -> dict[str, Any]:
    return dict(dtype=dtype, max_shard_size=max_shard_size, verify=verify, tolerance=tolerance,
                verify_length=verify_length, overwrite=overwrite, progress=progress)


# ------------------------------------------------------------------------------------------------------ directions
def official_to_package(
    source: str | os.PathLike, output: str | os.PathLike, *, family: str | None = None,
    dtype: str | torch.dtype | None = None, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE, verify: bool = True,
    tolerance: float = DEFAULT_TOLERANCE, verify_length: int = DEFAULT_LENGTH, overwrite: bool = False,
    progress: bool = True,
) -> ConversionReport:
    """Convert a family's official Hugging Face checkpoint folder into the package format.

    The family comes from config.json's `model_type` (`btlm`, `geblm`, `skywork`); TinyLlama and ChuXin both publish
    `llama`, so pass `family` for them. Special-token ids are taken from the folder's tokenizer / generation config
    (see `configs.resolve_special_ids`)."""
    source = Path(source)
    official_json = _read_json(source / "config.json")
    official = official_format_for(official_json.get("model_type"), family)
    config_class = FAMILIES[official.family].config_class
    config = official.read_config(official_json, config_class)
    published = {name: getattr(config_class(), name) for name in configs.SPECIAL_IDS}
    notes = configs.resolve_special_ids(config, source, official.config_json_ids_trusted, published)
    generation = configs.generation_config_for(config, source, official_json)
    layout = official.layout
    return _convert(
        reader=CheckpointReader.open(source), output=Path(output), table_layout=layout, direction=TO_PACKAGE,
        config=config, source=_Side(source, layout.runner, runner_for(layout)),
        write_support=_write_support(config, generation, source, notes),
        source_format=f"{official.family} {layout.name}", target_format="package", target_label=_PACKAGE_LABEL,
        target_runner=run_package, notes=notes, **_common(dtype, max_shard_size, verify, tolerance, verify_length,
                                                          overwrite, progress),
    )


def package_to_official(
    source: str | os.PathLike, output: str | os.PathLike, *, dtype: str | torch.dtype | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE, verify: bool = True, tolerance: float = DEFAULT_TOLERANCE,
    verify_length: int = DEFAULT_LENGTH, overwrite: bool = False, progress: bool = True,
) -> ConversionReport:
    """Convert a package checkpoint back into its family's official layout (config.json with the official names and
    the family's remote-code `auto_map`). The exact inverse of `official_to_package`: tensors round-trip bitwise."""
    source = Path(source)
    config = load_package_config(source)
    family = family_of(config)
    if family not in OFFICIAL_FORMATS:
        raise UsageValueError(f"{source} is a generic {config.model_type!r} checkpoint without an official layout; use "
                         "package_to_native (to-native) for a stock transformers checkpoint")
    layout = OFFICIAL_FORMATS[family].layout
    reader = CheckpointReader.open(source)
    config.dtype = _checkpoint_dtype(reader.infos(), _dtype(dtype))
    config_json = config_json_for(layout, config)
    notes = []
    if layout.remote_code:
        notes.append(f"config.json's auto_map names {family}'s remote code, which is not included: copy its "
                     f"configuration/modeling files from {layout.remote_code} to load with trust_remote_code=True")
    return _from_package(source, reader, output, layout, config, config_json, notes, f"{family} {layout.name}",
                         _common(dtype, max_shard_size, verify, tolerance, verify_length, overwrite, progress))


def package_to_native(
    source: str | os.PathLike, output: str | os.PathLike, *, target: str = "auto",
    dtype: str | torch.dtype | None = None, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE, verify: bool = True,
    tolerance: float = DEFAULT_TOLERANCE, verify_length: int = DEFAULT_LENGTH, overwrite: bool = False,
    progress: bool = True,
) -> ConversionReport:
    """Export a package checkpoint as a stock transformers `LlamaForCausalLM` or `GlmForCausalLM` checkpoint.

    `target="auto"` picks Llama when the config is Llama-shaped (half-layout full RoPE, RMSNorm, no muP multipliers)
    and GLM for GEB-shaped configs (interleaved, partial RoPE); a config neither can express (e.g. BTLM's ALiBi and
    muP) is refused with every reason."""
    source = Path(source)
    config = load_package_config(source)
    if target != "auto" and target not in NATIVE_LAYOUTS:
        raise UsageValueError(f"target={target!r}; choose auto, {', '.join(NATIVE_LAYOUTS)}")
    reader = CheckpointReader.open(source)
    config.dtype = _checkpoint_dtype(reader.infos(), _dtype(dtype))
    layout = native_layout_for(config, target)
    config_json = config_json_for(layout, config)
    notes = []
    if config.uses_mup:
        notes.append("the muP base widths (mup_base_*) are training metadata without a native field; they are not "
                     "exported (the model computes the same logits)")
    return _from_package(source, reader, output, layout, config, config_json, notes, f"native {layout.name}",
                         _common(dtype, max_shard_size, verify, tolerance, verify_length, overwrite, progress))


def _from_package(source: Path, reader, output, layout: Layout, config, config_json: dict, notes: list[str],
                  target_format: str, common: dict) -> ConversionReport:
    """The export half shared by `package_to_official` and `package_to_native`."""
    generation = configs.generation_config_for(config, source)
    return _convert(
        reader=reader, output=Path(output), table_layout=layout, direction=FROM_PACKAGE, config=config,
        source=_Side(source, _PACKAGE_LABEL, run_package),
        write_support=_write_support(config_json, generation, source, notes),
        source_format="package", target_format=target_format, target_label=layout.runner,
        target_runner=runner_for(layout), notes=notes, **common,
    )


def litgpt_to_package(
    checkpoint: str | os.PathLike, output: str | os.PathLike, *,
    config: SmallLLMConfig | str | os.PathLike | None = None,
    family: str = "tinyllama", preset: str = "published", tokenizer: str | os.PathLike | None = None,
    dtype: str | torch.dtype | None = None, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE, verify: bool = True,
    tolerance: float = DEFAULT_TOLERANCE, verify_length: int = DEFAULT_LENGTH, overwrite: bool = False,
    progress: bool = True,
) -> ConversionReport:
    """Convert a lit-gpt training checkpoint (TinyLlama's `iter-XXXXXX-ckpt.pth`, loaded with `weights_only=True`;
    the state dict may sit under "model") into the package format.

    lit-gpt checkpoints carry no model config: it is `config` (a SmallLLMConfig, or a package config.json / checkpoint
    folder), else `preset_config(family, preset)` (TinyLlama-1.1B by default). Every shape is checked against it.
    `tokenizer` is a folder whose tokenizer files (and special-token ids) go with the output."""
    checkpoint = Path(checkpoint)
    if config is None:
        config = preset_config(family, preset)
    elif not isinstance(config, SmallLLMConfig):
        config = load_package_config(Path(config))
    notes = []
    tokenizer_folder = Path(tokenizer) if tokenizer is not None else None
    if tokenizer_folder is not None:
        if not tokenizer_folder.is_dir():
            raise UsageFileNotFoundError(f"tokenizer folder not found: {tokenizer_folder}")
        published = {name: getattr(config, name) for name in configs.SPECIAL_IDS}
        notes += configs.resolve_special_ids(config, tokenizer_folder, True, published)
    reader = CheckpointReader.open(checkpoint)
    reader.infos()  # reads the pickle, which also fills `extras`
    if reader.extras:
        notes.append("training state in the checkpoint: "
                     + ", ".join(f"{k}={v}" for k, v in sorted(reader.extras.items())))
    generation = configs.generation_config_for(config, None)
    return _convert(
        reader=reader, output=Path(output), table_layout=LITGPT, direction=TO_PACKAGE, config=config,
        source=_Side(checkpoint, LITGPT.runner, runner_for(LITGPT)),
        write_support=_write_support(config, generation, tokenizer_folder, notes),
        source_format="litgpt", target_format="package", target_label=_PACKAGE_LABEL, target_runner=run_package,
        notes=notes, **_common(dtype, max_shard_size, verify, tolerance, verify_length, overwrite, progress),
    )


# ----------------------------------------------------------------------------------------------------------- helpers
_PACKAGE_LABEL = "hf_smallllm model"


def load_package_config(path: Path) -> SmallLLMConfig:
    """The config of a package checkpoint folder (or of a package config.json file)."""
    path = Path(path)
    data = _read_json(path / "config.json" if path.is_dir() else path)
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or not model_type.startswith("smallllm"):
        raise UsageValueError(f"{path} is not an hf_smallllm checkpoint (config.json model_type {model_type!r}); "
                              "official checkpoints convert with official_to_package (from-official)")
    if path.is_dir():
        return AutoConfig.from_pretrained(path)
    return AutoConfig.for_model(**{k: v for k, v in data.items() if k != "transformers_version"})


__all__ = [
    "DTYPES",
    "ConversionReport",
    "litgpt_to_package",
    "load_package_config",
    "official_to_package",
    "package_to_native",
    "package_to_official",
]
