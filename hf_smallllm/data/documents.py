"""Where documents come from: local text, JSONL and Parquet files, the bundled corpus, or `datasets` datasets.

A `DocumentSource` describes one source (files or a dataset, how a plain text file splits into documents, which
field holds the text) and iterates its documents in a fixed order, from any document index, so that a training
stream can be checkpointed as "source X at document N" and resumed exactly. Large datasets are read lazily
(line by line, Parquet row group by row group, `datasets` streaming) so memory stays bounded.

Text files split into documents by one rule:
- `file`: the whole file is one document;
- `line`: every non-empty line is a document (e.g. one Bible verse a line);
- `blank_line`: paragraphs separated by one or more empty lines;
- `heading`: a new document starts at every line matching `heading_pattern` (default: a Markdown `# ` title,
  e.g. one Shakespeare play per document).

Records (JSONL, Parquet, `datasets`) can be filtered by a metadata field before anything else sees them:
`filters: [{field: meta.redpajama_set_name, exclude: [RedPajamaGithub]}]` drops SlimPajama's GitHub subset, as
TinyLlama did (scripts/prepare_slimpajama.py of jzhang38/TinyLlama). `field` is a dotted path into the record,
`include` keeps only records whose value is listed, `exclude` drops them; a record must pass every filter. A record
without the field is an error naming it (a misspelt field would otherwise filter nothing). Filtering happens in the
document order, so `hf-smallllm data prepare` and on-the-fly tokenizing see the same documents, numbered alike.
"""

import glob
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from ..errors import UsageFileNotFoundError, UsageValueError
from ..resources import corpus_path

TEXT_SPLITS = ("file", "line", "blank_line", "heading")
# A source's name is also the name of its folder in prepared data: one plain path component, never "..", "/" or "~"
SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_source_name(name) -> str:
    """`name` when it can name a source (and its folder of prepared shards); ValueError naming the rule otherwise."""
    if not isinstance(name, str) or not SOURCE_NAME.match(name) or ".." in name:
        raise UsageValueError(f"source name {name!r}: use letters, digits, '_', '-' and '.' (not '..'), starting "
                              "with a letter or digit: it names a folder inside the prepared-data folder")
    return name
FILE_FORMATS = ("text", "jsonl", "parquet")
_MISSING = object()


@dataclass(frozen=True)
class DocumentFilter:
    """Keep or drop records by the value of one (dotted) metadata field."""

    field: str
    values: frozenset
    keep: bool  # True: include (keep only the listed values); False: exclude (drop them)

    @classmethod
    def from_spec(cls, spec, where: str) -> "DocumentFilter":
        if not isinstance(spec, dict) or set(spec) - {"field", "include", "exclude"}:
            raise UsageValueError(f"{where}: a filter is {{field: a.b, include: [...]}} or {{field: a.b, exclude: "
                                  f"[...]}}, got {spec!r}")
        field_path = spec.get("field")
        if not isinstance(field_path, str) or not field_path or "" in field_path.split("."):
            raise UsageValueError(f"{where}.field: a dotted path into the record (e.g. meta.redpajama_set_name), got "
                                  f"{field_path!r}")
        if ("include" in spec) == ("exclude" in spec):
            raise UsageValueError(f"{where}: give exactly one of 'include' or 'exclude'")
        values = spec.get("include", spec.get("exclude"))
        values = values if isinstance(values, list) else [values]
        if not values or not all(isinstance(v, (str, int, float, bool)) or v is None for v in values):
            raise UsageValueError(f"{where}: include/exclude takes a non-empty list of plain values, got {values!r}")
        return cls(field_path, frozenset(values), "include" in spec)

    def value_of(self, record: dict):
        value = record
        for key in self.field.split("."):
            if not isinstance(value, dict) or key not in value:
                return _MISSING
            value = value[key]
        return value

    def keeps(self, record: dict, where: str) -> bool:
        value = self.value_of(record)
        if value is _MISSING:
            raise UsageValueError(f"{where}: no field {self.field!r} to filter on (fields: {sorted(record)})")
        try:
            listed = value in self.values
        except TypeError:  # a list or mapping is never one of the plain values
            listed = False
        return listed == self.keep


@dataclass
class DocumentSource:
    """One named source of documents.

    Exactly one of `paths` (files or glob patterns; `bundled:<name>` names a file of the bundled corpus) or
    `dataset` (a `datasets` name or local builder such as "json", or an already loaded Dataset/IterableDataset)
    must be given.
    """

    name: str
    paths: list[str] = field(default_factory=list)
    format: str | None = None  # text | jsonl | parquet; inferred from the file suffix when None
    text_field: str = "text"
    split_by: str = "file"  # for text files, see the module docstring
    heading_pattern: str = r"^# "
    min_chars: int = 1  # documents shorter than this (after stripping) are skipped
    dataset: Any = None
    dataset_kwargs: dict = field(default_factory=dict)  # passed to datasets.load_dataset (split, data_files, ...)
    streaming: bool = True
    filters: list = field(default_factory=list)  # [{field: a.b, include|exclude: [values]}], see the module docstring

    def __post_init__(self):
        check_source_name(self.name)
        if not isinstance(self.filters, list):
            raise UsageValueError(f"source {self.name!r}: filters must be a list of {{field, include|exclude}}")
        self._filters = [DocumentFilter.from_spec(spec, f"source {self.name!r}: filters[{index}]")
                         for index, spec in enumerate(self.filters)]
        self.filtered_out = 0  # records dropped by the filters so far (counted as documents are read)
        if isinstance(self.paths, str):
            self.paths = [self.paths]
        if bool(self.paths) == (self.dataset is not None):
            raise UsageValueError(f"source {self.name!r}: give exactly one of 'paths' or 'dataset'")
        if self.split_by not in TEXT_SPLITS:
            raise UsageValueError(f"source {self.name!r}: split_by={self.split_by!r}; choose one of {TEXT_SPLITS}")
        if self.format is not None and self.format not in FILE_FORMATS:
            raise UsageValueError(f"source {self.name!r}: format={self.format!r}; choose one of {FILE_FORMATS}")
        if self.paths:
            self._files = self._resolve_files()
            if self._filters and any(self._format_of(path) == "text" for path in self._files):
                raise UsageValueError(f"source {self.name!r}: filters need records with fields (JSONL, Parquet or a "
                                      "dataset), not plain text files")

    # ------------------------------------------------------------------ files
    def _resolve_files(self) -> list[Path]:
        files = []
        for pattern in self.paths:
            if pattern.startswith("bundled:"):
                files.append(corpus_path(pattern.removeprefix("bundled:")))
                continue
            matches = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
            if not matches:
                raise UsageFileNotFoundError(f"source {self.name!r}: no file matches {pattern!r}")
            files.extend(Path(m) for m in matches if Path(m).is_file())
        for path in files:
            if self._format_of(path) not in FILE_FORMATS:
                raise UsageValueError(f"source {self.name!r}: cannot tell the format of {path}; set 'format'")
        return files

    def _format_of(self, path: Path) -> str:
        if self.format:
            return self.format
        suffixes = "".join(path.suffixes[-2:]).lower()
        if suffixes.endswith((".jsonl", ".json", ".jsonl.gz")):
            return "jsonl"
        if suffixes.endswith(".parquet"):
            return "parquet"
        return "text"

    def _text_documents(self, path: Path) -> Iterator[str]:
        opener = _open_text(path)
        with opener as handle:
            if self.split_by == "file":
                yield handle.read()
                return
            if self.split_by == "line":
                for line in handle:
                    yield line.rstrip("\n")
                return
            heading = re.compile(self.heading_pattern) if self.split_by == "heading" else None
            lines: list[str] = []
            for line in handle:
                if heading is not None:
                    if heading.match(line) and lines:
                        yield "".join(lines)
                        lines = []
                    lines.append(line)
                elif line.strip():
                    lines.append(line)
                elif lines:
                    yield "".join(lines)
                    lines = []
            if lines:
                yield "".join(lines)

    def _record_documents(self, path: Path, fmt: str) -> Iterator[str]:
        if fmt == "jsonl":
            with _open_text(path) as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise UsageValueError(f"{path}:{number}: not valid JSON ({err.msg})") from err
                    if self._keeps(record, f"{path}:{number}"):
                        yield self._text_of(record, f"{path}:{number}")
        else:
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            names = parquet.schema_arrow.names
            needed = [self.text_field] + [f.field.split(".")[0] for f in self._filters]
            for column in needed:
                if column not in names:
                    raise UsageValueError(f"{path}: no column {column!r} (columns: {names})")
            if not self._filters:
                for group in range(parquet.num_row_groups):
                    yield from parquet.read_row_group(group, columns=[self.text_field]).column(0).to_pylist()
                return
            number = 0
            for group in range(parquet.num_row_groups):
                for record in parquet.read_row_group(group, columns=sorted(set(needed))).to_pylist():
                    number += 1
                    if self._keeps(record, f"{path}[row {number}]"):
                        yield record[self.text_field]

    def _keeps(self, record, where: str) -> bool:
        if not self._filters or not isinstance(record, dict):
            return True  # a non-object record is named by _text_of
        if all(f.keeps(record, where) for f in self._filters):
            return True
        self.filtered_out += 1
        return False

    def _text_of(self, record: dict, where: str) -> str:
        if not isinstance(record, dict):
            raise UsageValueError(f"{where}: a record must be a JSON object with a {self.text_field!r} field, got "
                                  f"{type(record).__name__}")
        if self.text_field not in record:
            raise UsageValueError(f"{where}: no field {self.text_field!r} (fields: {sorted(record)})")
        text = record[self.text_field]
        if text is not None and not isinstance(text, str):
            raise UsageValueError(f"{where}: field {self.text_field!r} is {type(text).__name__}, not text")
        return text

    # ------------------------------------------------------------------ datasets
    def _dataset_documents(self) -> Iterator[str]:
        import datasets

        dataset = self.dataset
        if isinstance(dataset, str):
            dataset = datasets.load_dataset(dataset, streaming=self.streaming, **self.dataset_kwargs)
        if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict, dict)):
            raise ValueError(f"source {self.name!r}: got several splits ({sorted(dataset)}); choose one with "
                             "dataset_kwargs: {split: ...}")
        for number, record in enumerate(dataset):
            if self._keeps(record, f"{self.name}[{number}]"):
                yield self._text_of(record, f"{self.name}[{number}]")

    # ------------------------------------------------------------------ public
    def iter_documents(self, start: int = 0) -> Iterator[str]:
        """Documents in order, beginning with document number `start` (0-based); skipped ones are not tokenized."""
        return islice(self._all_documents(), start, None)

    def _all_documents(self) -> Iterator[str]:
        self.filtered_out = 0
        if self.dataset is not None:
            documents = self._dataset_documents()
        else:
            documents = (document for path in self._files for document in self._file_documents(path))
        for document in documents:
            if document is None:
                continue
            if len(document.strip()) >= self.min_chars:
                yield document

    def _file_documents(self, path: Path) -> Iterator[str]:
        """The documents of one file; a file that is not what its format says is named in one line."""
        import zlib

        fmt = self._format_of(path)
        try:
            yield from (self._text_documents(path) if fmt == "text" else self._record_documents(path, fmt))
        except UnicodeDecodeError as err:
            raise UsageValueError(f"{path}: not UTF-8 text (byte {err.start} of a read block is "
                                  f"{err.object[err.start:err.start + 1]!r}); convert it or leave it out") from None
        except (EOFError, zlib.error) as err:
            raise UsageValueError(f"{path}: truncated or corrupt compressed file ({err})") from None
        except OSError as err:
            if path.suffix == ".gz" and "gzip" in str(err).lower():
                raise UsageValueError(f"{path}: not a gzip file ({err})") from None
            raise

    @classmethod
    def from_dict(cls, spec: dict) -> "DocumentSource":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(spec) - known - {"weight", "prepared"}
        if unknown:
            raise UsageValueError(f"source {spec.get('name')!r}: unknown fields {sorted(unknown)}; known: "
                                  f"{sorted(known)}")
        return cls(**{k: v for k, v in spec.items() if k in known})


def _open_text(path: Path):
    if path.suffix == ".gz":
        import gzip

        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


__all__ = ["DocumentFilter", "DocumentSource", "FILE_FORMATS", "SOURCE_NAME", "TEXT_SPLITS", "check_source_name"]
