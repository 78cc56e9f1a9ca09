"""The run's metrics file: one JSON object per line, appended as training goes.

Every record has `step` (optimizer steps done) and `tokens` (training tokens seen so far); the rest are metric
names, e.g. `loss`, `lr`, `tokens_per_second`, or `eval/<domain>/loss` and `eval/<domain>/ppl` from per-domain
validation. Training, evaluation callbacks, plots and model cards all read and write this one format.
"""

import json
import os
from pathlib import Path
from typing import Any


def append_metrics(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one record; `step` is required. The line is written in one call, flushed and fsynced, so a crash
    never leaves half a line that later readers would trip over."""
    if "step" not in record:
        raise ValueError(f"a metrics record needs a 'step' field, got keys {sorted(record)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records in file order; a truncated last line (a run killed mid-write) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


__all__ = ["append_metrics", "read_metrics"]
