"""The run's learning curves in one PNG: training loss (left) and per-domain validation loss (right), both against
training tokens, read from the run's metrics file."""

import os
from pathlib import Path

from ..runfiles import atomic_path, read_metrics


def plot_run_curves(metrics_path: str | os.PathLike, output_path: str | os.PathLike, title: str | None = None) -> Path:
    """Draw the training-loss and validation-loss curves of a run into `output_path` (written atomically)."""
    from matplotlib.figure import Figure

    from ..eval.plot import domain_curves  # eval's package imports pull in transformers; only needed here

    records = read_metrics(metrics_path)
    train = [(r["tokens"], r["loss"]) for r in records if "loss" in r and r.get("tokens")]
    curves = domain_curves(records)
    if not train and not curves:
        raise ValueError(f"{metrics_path} has no training-loss or validation records to plot")
    figure = Figure(figsize=(11, 4.5))
    left, right = figure.subplots(1, 2)
    if train:
        left.plot([t for t, _ in train], [loss for _, loss in train], color="tab:blue")
    left.set_title("training loss")
    for domain, points in sorted(curves.items()):
        right.plot([tokens for _, tokens, _ in points], [loss for _, _, loss in points], marker="o", markersize=3,
                   label=domain)
    right.set_title("validation loss per domain")
    if curves:
        right.legend(fontsize=8)
    for axes in (left, right):
        axes.set_xlabel("training tokens")
        axes.set_ylabel("loss (nats/token)")
        axes.grid(True, alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(output_path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    return Path(output_path)


__all__ = ["plot_run_curves"]
