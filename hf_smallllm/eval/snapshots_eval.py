"""Evaluating every snapshot of a training run: domain perplexity plus chosen lm-eval tasks for each revision of a
published repo (its snapshot branches, `hf_smallllm.hub.snapshots`) or each `checkpoint-N` folder of a local run,
as the papers plot their benchmarks against training tokens.

Resumable: each revision's result is written on its own (`<output>/revisions/<revision>.json`, atomically) as soon
as it is measured, with the settings it was measured under; a rerun with the same settings skips every revision
that has a result, so an interrupted sweep continues where it stopped and a sweep over a repo that has gained
snapshots measures only the new ones. The table (Markdown, CSV, JSON) and the plot (metric against training tokens)
are rewritten from all results at the end.

`push_model_index` writes the results into the repo's model card as `model-index` metadata through
huggingface_hub's `ModelCard` / `EvalResult` (the `evaluate` library's `push_to_hub` writes the same metadata, but
the package does not depend on `evaluate`): one result per metric and revision, named after the revision, so the
Hub shows the curve's points; results that other tools wrote are kept.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageValueError
from ..runfiles import atomic_path, write_json_atomic, write_text_atomic

REVISIONS_DIR = "revisions"
TABLE_NAME = "snapshots"  # snapshots.md / .csv / .json / .png in the output folder
SOURCE_NAME = "hf-smallllm eval snapshots"  # marks the model-index results this module writes (metric_args)
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SnapshotToEvaluate:
    """One revision: a snapshot branch of a Hub repo, or a checkpoint folder of a local run."""

    revision: str  # branch name, the checkpoint folder's name, or a sub-folder snapshot's path (Skywork's)
    step: int | None  # None: a sub-folder snapshot, named by its tokens only
    tokens: int
    commit: str | None = None  # the branch's commit (Hub)
    folder: Path | None = None  # the checkpoint folder (local run)
    subfolder: str | None = None  # the snapshot's folder inside the repo (Hub, sub-folder snapshots)


@dataclass
class SnapshotResult:
    revision: str
    step: int | None
    tokens: int
    metrics: dict[str, float]  # "ppl/<domain>", "ppl/average", "<task>/<metric>"
    commit: str | None = None
    resumed: bool = False  # read back from an earlier run, not measured now

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "step": self.step, "tokens": self.tokens, "commit": self.commit,
                "metrics": self.metrics}


@dataclass
class SnapshotTable:
    source: str
    settings: dict[str, Any]
    results: list[SnapshotResult] = field(default_factory=list)

    @property
    def metric_names(self) -> list[str]:
        names: list[str] = []
        for result in self.results:
            names += [m for m in result.metrics if m not in names]
        return names

    def rows(self) -> list[list[Any]]:
        return [[r.revision, r.step, r.tokens, *(r.metrics.get(m) for m in self.metric_names)] for r in self.results]

    def to_markdown(self, digits: int = 4) -> str:
        header = ["revision", "step", "tokens", *self.metric_names]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.rows():
            cells = [f"{v:.{digits}g}" if isinstance(v, float) else ("—" if v is None else str(v)) for v in row]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["revision", "step", "tokens", *self.metric_names])
        writer.writerows(["" if v is None else v for v in row] for row in self.rows())
        return buffer.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "settings": self.settings, "snapshots": [r.to_dict() for r in self.results]}

    def write(self, output_dir: str | os.PathLike, plot: bool = True) -> list[Path]:
        """snapshots.md, .csv, .json (and .png) in `output_dir`, each written atomically."""
        output_dir = Path(output_dir)
        written = [write_text_atomic(output_dir / f"{TABLE_NAME}.md", self.to_markdown() + "\n"),
                   write_text_atomic(output_dir / f"{TABLE_NAME}.csv", self.to_csv()),
                   write_json_atomic(output_dir / f"{TABLE_NAME}.json", self.to_dict())]
        if plot and self.results:
            written.append(plot_snapshot_metrics(self, output_dir / f"{TABLE_NAME}.png"))
        return written


def find_snapshots(source: str | os.PathLike, *, endpoint: str | None = None, token: str | None = None,
                   branch_template: str | None = None) -> list[SnapshotToEvaluate]:
    """The revisions of `source`, oldest first: a local run folder's checkpoints, else a Hub repo's snapshot
    branches (exact step and tokens from each branch's trainer_state.json)."""
    from ..hub.revisions import run_snapshots
    from ..hub.snapshots import list_snapshots

    path = Path(source)
    if path.is_dir():
        found = [SnapshotToEvaluate(s.path.name, s.step, s.tokens, folder=s.path) for s in run_snapshots(path)]
        where = f"run folder {path}"
    else:
        from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError

        try:
            listed = list_snapshots(str(source), branch_template=branch_template, endpoint=endpoint, token=token,
                                    exact_tokens=True)
        except (RepositoryNotFoundError, HFValidationError) as err:
            raise UsageValueError(f"{str(source)!r} is neither a run folder nor a Hub repo this token can read") \
                from err
        found = [SnapshotToEvaluate(s.subfolder or s.branch, s.step, s.tokens, commit=s.commit, subfolder=s.subfolder)
                 for s in listed]
        where = f"repo {source}"
    if not found:
        raise UsageValueError(f"no snapshots in {where} (checkpoint-N folders, or snapshot branches)")
    return found


def _result_path(output_dir: Path, revision: str) -> Path:
    return output_dir / REVISIONS_DIR / f"{_UNSAFE_NAME.sub('_', revision)}.json"


def _read_result(path: Path, settings: Mapping[str, Any]) -> SnapshotResult | None:
    """An earlier result measured under the same settings, or None."""
    import json

    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a damaged file is measured again
    if data.get("settings") != dict(settings):
        return None
    return SnapshotResult(data["revision"], int(data["step"]), int(data["tokens"]), dict(data["metrics"]),
                          data.get("commit"), resumed=True)


def measure_snapshot(folder: str | os.PathLike, *, domains=None, tasks: Sequence[str] = (),
                     max_chars: int | None = None, max_documents: int | None = None, limit: int | float | None = None,
                     num_fewshot: int | None = None, batch_size: int = 4, device: str | None = None,
                     dtype: str = "auto", progress: bool = False) -> dict[str, float]:
    """Domain perplexity (the model's own tokens are the reference: snapshots of one run share a tokenizer) and
    the lm-eval tasks' metrics of one checkpoint folder."""
    import gc

    from ..inference.loading import load_model_and_tokenizer
    from .domain_ppl import default_max_chars, load_domain_documents, reference_token_counts, score_model
    from .harness import run_benchmarks, summary

    model, tokenizer = load_model_and_tokenizer(str(folder), device=device, dtype=dtype)
    metrics: dict[str, float] = {}
    documents = load_domain_documents(domains, max_chars=max_chars or default_max_chars(model.config),
                                      max_documents=max_documents)
    scores = score_model(str(folder), model, tokenizer, documents, reference_token_counts(tokenizer, documents),
                         batch_size=batch_size, progress=progress)
    metrics.update({f"ppl/{name}": score.ppl for name, score in scores.domains.items()})
    metrics["ppl/average"] = scores.average_ppl
    if tasks:
        results = run_benchmarks(model, list(tasks), tokenizer=tokenizer, limit=limit, batch_size=batch_size,
                                 num_fewshot=num_fewshot)
        for task, values in summary(results).items():
            metrics.update({f"{task}/{metric}": float(value) for metric, value in values.items()})
    del model
    gc.collect()
    return metrics


def evaluate_snapshots(source: str | os.PathLike, output_dir: str | os.PathLike, *, domains=None,
                       tasks: Sequence[str] = (), max_chars: int | None = None, max_documents: int | None = None,
                       limit: int | float | None = None, num_fewshot: int | None = None, batch_size: int = 4,
                       device: str | None = None, dtype: str = "auto", endpoint: str | None = None,
                       token: str | None = None, branch_template: str | None = None, cache_dir: str | None = None,
                       plot: bool = True, progress: bool = True) -> SnapshotTable:
    """Measure every revision of `source` (a run folder or a Hub repo id) that has no result under these settings
    in `output_dir` yet, then write the table and the plot. See the module docstring."""
    from ..hub.snapshots import download_snapshot

    output_dir = Path(output_dir)
    snapshots = find_snapshots(source, endpoint=endpoint, token=token, branch_template=branch_template)
    settings = {"domains": _domain_setting(domains), "tasks": list(tasks), "max_chars": max_chars,
                "max_documents": max_documents, "limit": limit, "num_fewshot": num_fewshot}
    table = SnapshotTable(str(source), settings)
    for index, snapshot in enumerate(snapshots):
        path = _result_path(output_dir, snapshot.revision)
        result = _read_result(path, settings)
        if result is None:
            if progress:
                step = "" if snapshot.step is None else f"step {snapshot.step}, "
                print(f"[{index + 1}/{len(snapshots)}] {snapshot.revision}: {step}{snapshot.tokens:,} tokens",
                      flush=True)
            folder = snapshot.folder
            if folder is None:
                revision = snapshot.commit or (None if snapshot.subfolder else snapshot.revision)
                folder, _ = download_snapshot(str(source), revision=revision, endpoint=endpoint, token=token,
                                              cache_dir=cache_dir, subfolder=snapshot.subfolder)
            metrics = measure_snapshot(folder, domains=domains, tasks=tasks, max_chars=max_chars,
                                       max_documents=max_documents, limit=limit, num_fewshot=num_fewshot,
                                       batch_size=batch_size, device=device, dtype=dtype, progress=progress)
            result = SnapshotResult(snapshot.revision, snapshot.step, snapshot.tokens, metrics, snapshot.commit)
            write_json_atomic(path, {**result.to_dict(), "settings": settings})
        elif progress:
            print(f"[{index + 1}/{len(snapshots)}] {snapshot.revision}: measured earlier, kept", flush=True)
        table.results.append(result)
    table.write(output_dir, plot=plot)
    return table


def _domain_setting(domains) -> Any:
    """The domains as JSON-comparable settings (names and paths)."""
    if domains is None:
        return None
    from .documents import resolve_domains

    return {d.name: str(d.path) for d in resolve_domains(domains)}


def plot_snapshot_metrics(table: SnapshotTable, output_path: str | os.PathLike) -> Path:
    """One panel of domain perplexities (log scale) and one of task metrics, against training tokens (steps when
    the snapshots did not count tokens)."""
    from matplotlib.figure import Figure

    by_tokens = all(r.tokens > 0 for r in table.results)
    xs = [r.tokens if by_tokens else r.step for r in table.results]
    ppl = [m for m in table.metric_names if m.startswith("ppl/")]
    other = [m for m in table.metric_names if not m.startswith("ppl/")]
    panels = [p for p in (ppl, other) if p]
    figure = Figure(figsize=(8, 4 * len(panels)))
    axes_list = figure.subplots(len(panels), 1, squeeze=False)[:, 0]
    for axes, names in zip(axes_list, panels, strict=True):
        for name in names:
            points = [(x, r.metrics.get(name)) for x, r in zip(xs, table.results, strict=True)]
            points = [(x, y) for x, y in points if y is not None and math.isfinite(y)]
            axes.plot([x for x, _ in points], [y for _, y in points], marker="o", markersize=3, label=name)
        if names is ppl:
            axes.set_yscale("log")
            axes.set_ylabel("perplexity")
        else:
            axes.set_ylabel("score")
        axes.set_xlabel("training tokens" if by_tokens else "optimizer step")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    axes_list[0].set_title(f"Snapshots of {table.source}")
    figure.tight_layout()
    with atomic_path(output_path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    return Path(output_path)


def model_index_results(table: SnapshotTable) -> list:
    """huggingface_hub `EvalResult`s: one per metric and revision, the revision in the metric's name."""
    from huggingface_hub import EvalResult

    results = []
    for result in table.results:
        for name, value in result.metrics.items():
            if value is None or not math.isfinite(value):
                continue
            kind, _, metric = name.partition("/")
            if kind == "ppl":
                dataset, metric_type = metric, "perplexity"
                label = f"perplexity {metric}"
            else:
                dataset, metric_type = kind, metric
                label = f"{kind} {metric}"
            results.append(EvalResult(
                task_type="text-generation", dataset_type=dataset, dataset_name=dataset, metric_type=metric_type,
                metric_value=float(value), metric_name=f"{label} at {result.revision} ({result.tokens:,} tokens)",
                # the Hub's schema has no field for "measured on which revision"; metric_args carries it, and marks
                # the results this module wrote (source_name would need a source_url, which a local run lacks)
                metric_args={"evaluated_by": SOURCE_NAME, "revision": result.revision, "step": result.step,
                             "tokens": result.tokens},
            ))
    return results


def push_model_index(table: SnapshotTable, repo_id: str, *, endpoint: str | None = None, token: str | None = None,
                     revision: str = "main") -> str:
    """Write the table into the model card's `model-index` on `revision` (results this command wrote before are
    replaced, others kept); returns the commit id."""
    from huggingface_hub import HfApi, ModelCard, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        card = ModelCard.load(hf_hub_download(repo_id, "README.md", revision=revision, endpoint=endpoint,
                                              token=token))
    except EntryNotFoundError:
        card = ModelCard("---\n{}\n---\n")
    kept = [r for r in (card.data.eval_results or []) if (r.metric_args or {}).get("evaluated_by") != SOURCE_NAME]
    card.data.eval_results = kept + model_index_results(table)
    card.data.model_name = card.data.model_name or repo_id.split("/")[-1]
    info = HfApi(endpoint=endpoint, token=token).upload_file(
        path_or_fileobj=str(card).encode("utf-8"), path_in_repo="README.md", repo_id=repo_id, revision=revision,
        commit_message=f"model-index: {len(table.results)} snapshot evaluations ({SOURCE_NAME})")
    return info.oid


__all__ = ["SOURCE_NAME", "SnapshotResult", "SnapshotTable", "SnapshotToEvaluate", "evaluate_snapshots",
           "find_snapshots", "measure_snapshot", "model_index_results", "plot_snapshot_metrics", "push_model_index"]
