"""Evaluation documents: reading a domain's file into a list of texts, and the bundled validation domains.

A domain is a name and a file. JSON-lines files (`.jsonl`, optionally `.gz`) hold one document per record, its text
in `text_field`; any other file is plain text, cut into consecutive documents of at most `chunk_chars` characters
at line ends (a verse-per-line Bible becomes passages of whole verses; a play becomes scenes' worth of lines).
Documents are then optionally thinned to `max_documents`, evenly spaced through the file so the sample spans it,
and cut to `max_chars` characters: Skywork truncates every document to the same number of characters so that models
with different tokenizers see identical text (tech report section 4.3; `eval/eval_loss.py` uses
`text[:max_tokens // 3]`).

The default domains are the held-out halves of the bundled corpus (`hf_smallllm/resources/corpus/validation/`):
English drama, the King James Bible, Python documentation, Chinese poetry and Python source.
"""

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageFileNotFoundError
from ..resources import CORPUS

DEFAULT_CHUNK_CHARS = 2000


@dataclass(frozen=True)
class Domain:
    """A named evaluation file."""

    name: str
    path: Path


def default_domains() -> list[Domain]:
    """The five bundled validation domains, named after their files (`en_kjv`, `zh_poetry`, ...)."""
    folder = CORPUS / "validation"
    return [Domain(_stem(p), p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != "README.md"]


def parse_domain(spec: str) -> Domain:
    """`name=path` (or a bare path, named after the file) -> Domain; the file must exist."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = _stem(Path(spec)), spec
    name, path = name.strip(), Path(path.strip()).expanduser()
    if not name or "/" in name:
        raise ValueError(f"domain {spec!r}: give it as name=path with a name without '/'")
    if not path.is_file():
        raise UsageFileNotFoundError(f"domain {name!r}: no such file {str(path)!r}")
    return Domain(name, path)


def resolve_domains(specs) -> list[Domain]:
    """Domains from `name=path` strings, a {name: path} mapping, or None (the bundled validation domains); names
    must be unique."""
    if specs is None or (not isinstance(specs, dict) and len(specs) == 0):
        return default_domains()
    if isinstance(specs, dict):
        domains = [parse_domain(f"{name}={path}") for name, path in specs.items()]
    elif isinstance(specs, str):
        domains = [parse_domain(specs)]
    else:
        domains = [spec if isinstance(spec, Domain) else parse_domain(str(spec)) for spec in specs]
    names = [d.name for d in domains]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"domain names must be unique; repeated: {', '.join(duplicates)}")
    return domains


def read_documents(
    path: str | Path,
    *,
    text_field: str = "text",
    chunk_chars: int = DEFAULT_CHUNK_CHARS,
    max_documents: int | None = None,
    max_chars: int | None = None,
) -> list[str]:
    """The documents of one file (see the module docstring); empty documents are dropped."""
    path = Path(path)
    if chunk_chars < 1:
        raise ValueError(f"chunk_chars must be >= 1, got {chunk_chars}")
    if max_chars is not None and max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    if _is_jsonl(path):
        documents = list(_jsonl_texts(path, text_field))
    else:
        documents = chunk_text(_read_text(path), chunk_chars)
    documents = [d for d in documents if d.strip()]
    if not documents:
        raise ValueError(f"{path}: no documents found")
    documents = evenly_spaced(documents, max_documents)
    if max_chars is not None:
        documents = [d[:max_chars] for d in documents]
    return documents


def chunk_text(text: str, chunk_chars: int) -> list[str]:
    """Consecutive pieces of `text` of at most `chunk_chars` characters, cut after a newline where possible (a single
    line longer than `chunk_chars` is cut inside)."""
    chunks, current, size = [], [], 0
    for line in text.splitlines(keepends=True):
        while len(line) > chunk_chars:
            if current:
                chunks.append("".join(current))
                current, size = [], 0
            chunks.append(line[:chunk_chars])
            line = line[chunk_chars:]
        if size + len(line) > chunk_chars and current:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        chunks.append("".join(current))
    return chunks


def evenly_spaced(items: list, count: int | None) -> list:
    """`count` items spread evenly from first to last (all of them when count is None or not smaller)."""
    if count is None or count >= len(items):
        return list(items)
    if count < 1:
        raise ValueError(f"max_documents must be >= 1, got {count}")
    if count == 1:
        return [items[0]]
    step = (len(items) - 1) / (count - 1)
    return [items[round(i * step)] for i in range(count)]


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".json", ".txt", ".md", ".rst"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name


def _is_jsonl(path: Path) -> bool:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name.endswith(".jsonl")


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _read_text(path: Path) -> str:
    with _open_text(path) as f:
        return f.read()


def _jsonl_texts(path: Path, text_field: str):
    with _open_text(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict) or text_field not in record:
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise ValueError(f"{path}:{number}: no {text_field!r} field (has {keys}); set the text field")
            yield str(record[text_field])


__all__ = [
    "DEFAULT_CHUNK_CHARS",
    "Domain",
    "chunk_text",
    "default_domains",
    "evenly_spaced",
    "parse_domain",
    "read_documents",
    "resolve_domains",
]
