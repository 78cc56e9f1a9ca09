"""The shipped benchmark files as lm-eval datasets (`custom_dataset: !function smallllm_data.load`).

lm-eval calls `load(**metadata, **dataset_kwargs)`; `files` maps a split to a path relative to
`hf_smallllm/resources/benchmarks/`, which is found from this file's own location, so the task folder works from
any working directory and with any installed copy of the package.
"""

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "resources" / "benchmarks"


def load(files: dict, **_ignored):
    """A DatasetDict with one split per entry of `files` (JSONL, optionally gzipped)."""
    import datasets

    missing = [str(BENCHMARKS / path) for path in files.values() if not (BENCHMARKS / path).is_file()]
    if missing:
        raise FileNotFoundError(f"benchmark data not found: {', '.join(missing)}")
    return datasets.load_dataset("json", data_files={split: str(BENCHMARKS / path) for split, path in files.items()})


__all__ = ["BENCHMARKS", "load"]
