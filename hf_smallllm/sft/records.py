"""Instruction data in, conversations out: reading records and checking that each is a usable conversation.

Two record shapes are accepted, per source or detected per record:
- `messages`: `{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}` (the common chat format,
  as in `tokenizer.apply_chat_template`);
- `instruction`: `{"instruction": str, "input": str (optional), "output": str, "system": str (optional)}`
  (Alpaca-style triples), turned into one user turn (instruction, a blank line, input) and one assistant turn.

Records come from local JSONL, JSON (a list) or Parquet files (`bundled:<name>` names a file shipped in
`hf_smallllm/resources/sft/`), or from a `datasets` dataset (a name/builder or an already loaded Dataset).
A record that is not a conversation raises `SampleError` with a reason code; `samples.py` decides (by policy)
whether that stops the run or is skipped and counted.
"""

import glob
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageFileNotFoundError, UsageValueError
from .templates import ROLES

RESOURCES = Path(__file__).parents[1] / "resources" / "sft"
RECORD_FORMATS = ("auto", "messages", "instruction")


class SampleError(UsageValueError):
    """A record that cannot be trained on; `reason` is a short code used for counting. The user's data, not a bug:
    the command line prints it as one line."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class RecordSource:
    """One named source of instruction records: `paths` (files/globs, `bundled:<name>`) or `dataset`."""

    name: str
    paths: list[str] = field(default_factory=list)
    dataset: Any = None  # a datasets name/builder ("json", "parquet", a Hub name) or a loaded Dataset
    dataset_kwargs: dict = field(default_factory=dict)  # for datasets.load_dataset (split, data_files, ...)
    format: str = "auto"  # auto | messages | instruction
    messages_field: str = "messages"
    limit: int | None = None  # read at most this many records

    def __post_init__(self):
        if isinstance(self.paths, str):
            self.paths = [self.paths]
        if bool(self.paths) == (self.dataset is not None):
            raise UsageValueError(f"source {self.name!r}: give exactly one of 'paths' or 'dataset'")
        if self.format not in RECORD_FORMATS:
            raise UsageValueError(f"source {self.name!r}: format={self.format!r}; choose one of {RECORD_FORMATS}")

    @classmethod
    def from_dict(cls, spec: dict) -> "RecordSource":
        spec = dict(spec)
        if "path" in spec:
            spec["paths"] = spec.pop("path")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(spec) - known
        if unknown:
            raise UsageValueError(f"source {spec.get('name')!r}: unknown keys {sorted(unknown)}; known: "
                                  f"{sorted(known)}")
        return cls(**spec)

    def files(self) -> list[Path]:
        found = []
        for pattern in self.paths:
            if pattern.startswith("bundled:"):
                path = RESOURCES / pattern[len("bundled:"):]
                if not path.exists():
                    shipped = sorted(p.name for p in RESOURCES.glob("*.jsonl"))
                    raise UsageFileNotFoundError(f"source {self.name!r}: no bundled SFT file {pattern!r}; shipped: "
                                            f"{', '.join(shipped)}")
                found.append(path)
                continue
            matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
            if not matches or not all(Path(m).exists() for m in matches):
                raise UsageFileNotFoundError(f"source {self.name!r}: no file matches {pattern!r}")
            folders = [m for m in matches if Path(m).is_dir()]
            if folders:
                raise UsageValueError(f"source {self.name!r}: {folders[0]} is a folder; name its files (e.g. "
                                      f"{folders[0]}/*.jsonl)")
            found.extend(Path(m) for m in matches)
        return found

    def iter_records(self) -> Iterator[tuple[str, Any]]:
        """(origin, record) pairs; a line that is not valid JSON is yielded as a `SampleError` to be counted."""
        count = 0
        for origin, record in self._raw_records():
            if self.limit is not None and count >= self.limit:
                return
            count += 1
            yield origin, record

    def _raw_records(self) -> Iterator[tuple[str, Any]]:
        if self.dataset is not None:
            dataset = self.dataset
            if isinstance(dataset, str):
                import datasets

                kwargs = {"split": "train", **self.dataset_kwargs}
                dataset = datasets.load_dataset(dataset, **kwargs)
            for index, record in enumerate(dataset):
                yield f"{self.name}[{index}]", record
            return
        for path in self.files():
            try:
                yield from self._file_records(path)
            except UnicodeDecodeError as err:
                raise UsageValueError(f"{path}: not UTF-8 text (byte {err.start}); SFT data must be UTF-8 "
                                      "JSON") from None

    def _file_records(self, path: Path) -> Iterator[tuple[str, Any]]:
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            for index, record in enumerate(pq.read_table(path).to_pylist()):
                yield f"{path.name}[{index}]", record
        elif suffix == ".json":
            try:
                records = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise UsageValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
            if not isinstance(records, list):
                raise UsageValueError(f"{path}: a .json source must hold a list of records, not a "
                                      f"{type(records).__name__} (use .jsonl for one record per line)")
            for index, record in enumerate(records):
                yield f"{path.name}[{index}]", record
        else:
            with open(path, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        yield f"{path.name}:{number}", json.loads(line)
                    except json.JSONDecodeError as err:
                        yield f"{path.name}:{number}", SampleError("malformed", f"not valid JSON ({err.msg})")


def to_messages(record: Any, record_format: str = "auto", messages_field: str = "messages") -> list[dict]:
    """The conversation of one record, validated: roles known, system only first, at least one non-empty
    assistant turn, every content a string. Raises SampleError."""
    if isinstance(record, SampleError):
        raise record
    if not isinstance(record, dict):
        raise SampleError("malformed", f"a record must be a JSON object, got {type(record).__name__}")
    if record_format == "auto":
        record_format = "messages" if messages_field in record else "instruction"
    if record_format == "messages":
        messages = record.get(messages_field)
        if not isinstance(messages, list) or not messages:
            raise SampleError("malformed", f"'{messages_field}' must be a non-empty list of turns")
    else:
        messages = _instruction_to_messages(record)
    cleaned = []
    for index, turn in enumerate(messages):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise SampleError("malformed", f"turn {index} must have 'role' and 'content'")
        role, content = turn["role"], turn["content"]
        if role not in ROLES:
            raise SampleError("unknown_role", f"turn {index} has role {role!r}; known roles: {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise SampleError("malformed", f"turn {index} content must be a string, got {type(content).__name__}")
        if role == "system" and index != 0:
            raise SampleError("misplaced_system", f"turn {index} is a system turn; only the first turn may be one")
        if role == "assistant" and not content.strip():
            raise SampleError("empty_assistant", f"turn {index} is an empty assistant turn")
        cleaned.append({"role": role, "content": content})
    if not any(turn["role"] == "assistant" for turn in cleaned):
        raise SampleError("no_assistant", "the conversation has no assistant turn to learn from")
    return cleaned


def _instruction_to_messages(record: dict) -> list[dict]:
    instruction, output = record.get("instruction"), record.get("output")
    if not isinstance(instruction, str) or not instruction.strip():
        raise SampleError("malformed", "an instruction record needs a non-empty 'instruction' (or use 'messages')")
    if not isinstance(output, str):
        raise SampleError("malformed", "an instruction record needs an 'output' string")
    extra = record.get("input") or ""
    if not isinstance(extra, str):
        raise SampleError("malformed", "'input' must be a string")
    messages = []
    if record.get("system"):
        messages.append({"role": "system", "content": record["system"]})
    messages.append({"role": "user", "content": f"{instruction}\n\n{extra}" if extra.strip() else instruction})
    messages.append({"role": "assistant", "content": output})
    return messages


__all__ = ["RECORD_FORMATS", "RESOURCES", "RecordSource", "SampleError", "to_messages"]
