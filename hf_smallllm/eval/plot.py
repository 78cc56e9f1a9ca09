"""The per-domain validation curves of a run as a PNG: one line per domain, loss against training tokens (or steps
when the run did not count tokens), read from the run's metrics file (`eval/<domain>/loss` records)."""

import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import UsageFileNotFoundError
from ..runfiles import atomic_path, read_metrics

_LOSS_KEY = re.compile(r"^eval/(?P<domain>.+)/loss$")


def domain_curves(records: Sequence[dict]) -> dict[str, list[tuple[int, int, float]]]:
    """{domain: [(step, tokens, loss), ...]} from metrics records, in record order; a step logged twice (a resumed
    run) keeps its last value."""
    curves: dict[str, dict[int, tuple[int, int, float]]] = {}
    for record in records:
        for key, value in record.items():
            match = _LOSS_KEY.match(key)
            if match and value is not None:
                step = int(record.get("step", 0))
                curves.setdefault(match["domain"], {})[step] = (step, int(record.get("tokens") or 0), float(value))
    return {domain: sorted(points.values()) for domain, points in curves.items()}


def plot_domain_curves(source: str | os.PathLike | Sequence[dict], output_path: str | os.PathLike,
                       title: str | None = None) -> Path:
    """Draw the per-domain validation loss curves of a metrics file (or of a list of records) into a PNG."""
    # A bare Figure renders with Agg without touching pyplot's global state or the user's backend.
    from matplotlib.figure import Figure

    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise UsageFileNotFoundError(f"no such metrics file {str(source)!r}")
    records = read_metrics(source) if isinstance(source, (str, os.PathLike)) else list(source)
    curves = domain_curves(records)
    if not curves:
        raise ValueError(f"no per-domain validation records (keys eval/<domain>/loss) in {source!r}")
    # Tokens are the comparable x axis across runs with different batch sizes; fall back to steps if not counted.
    by_tokens = all(tokens > 0 for points in curves.values() for step, tokens, _ in points if step > 0)
    figure = Figure(figsize=(8, 5))
    axes = figure.subplots()
    for domain, points in sorted(curves.items()):
        xs = [tokens if by_tokens else step for step, tokens, _ in points]
        axes.plot(xs, [loss for _, _, loss in points], marker="o", markersize=3, label=domain)
    axes.set_xlabel("training tokens" if by_tokens else "optimizer step")
    axes.set_ylabel("validation loss (nats/token)")
    axes.set_title(title or "Per-domain validation loss")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with atomic_path(output_path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    return Path(output_path)


__all__ = ["domain_curves", "plot_domain_curves"]
