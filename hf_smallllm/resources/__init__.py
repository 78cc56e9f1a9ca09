"""Data shipped with the package (bundled corpus, benchmark subsets, templates), located relative to this file so
it works from a source checkout and after a wheel install alike."""

from pathlib import Path

from ..errors import UsageFileNotFoundError

RESOURCES = Path(__file__).parent
CORPUS = RESOURCES / "corpus"


def corpus_path(name: str) -> Path:
    """Path of a bundled corpus file, e.g. "en_kjv.txt" or "validation/zh_poetry.jsonl"; FileNotFoundError lists
    what exists when the name is wrong."""
    path = CORPUS / name
    if not path.exists():
        available = sorted(str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*")
                           if p.is_file() and p.name != "README.md")
        raise UsageFileNotFoundError(f"no bundled corpus file {name!r}; available: {', '.join(available)}")
    return path


__all__ = ["CORPUS", "RESOURCES", "corpus_path"]
