"""The papers' benchmark tables: which lm-eval tasks, shots and metrics each family's paper reports, the numbers it
printed, and running that suite on a model to print ours beside theirs.

The tables are data, one YAML file per family in `hf_smallllm/resources/paper_tables/` (the paper's arXiv id, the
table each row comes from, and a `source` line saying where each number was read). A row names an lm-eval task by
its registered name (so online users get the real data set), its shots, its metric (and lm-eval filter), and the
paper's score in percent, or null where no source we could read confirmed it. `assumed:` lists the settings that
the source does not state.

The suite runs as one inline lm-eval group of the registered tasks with each row's shots as an override, so the
prompts, metrics and filters are lm-eval's own. Offline (`offline=True`) the same registered configurations read
tiny hand-written stand-ins instead of the Hub data sets (`hf_smallllm/resources/benchmarks/paper/<task>/`, each in
its data set's own schema); a row can name a shipped local task (`smallllm_mmlu`) or a few subtasks of a large group
for this instead. Offline scores test the wiring only: they are not comparable to the papers'.
"""

from __future__ import annotations

import contextlib
import functools
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UsageValueError
from ..resources import RESOURCES

PAPER_TABLES = RESOURCES / "paper_tables"
OFFLINE_DATA = RESOURCES / "benchmarks" / "paper"
EVAL_FILE = "eval.jsonl"  # the split that is scored
FEWSHOT_FILE = "fewshot.jsonl"  # the split few-shot examples are drawn from (when the task has shots)
_ROW_KEYS = {"benchmark", "task", "shots", "metric", "filter", "paper", "note", "assumed", "offline", "unsafe_code"}


@dataclass(frozen=True)
class PaperRow:
    """One benchmark of a paper's table."""

    table: str
    benchmark: str  # the paper's name for it
    task: str  # lm-eval task or group (registered, or one of the package's shipped tasks)
    shots: int
    metric: str  # lm-eval metric name
    paper: float | None  # the paper's score in percent; None: not confirmed from a source
    filter: str = "none"  # lm-eval filter whose value is the score (gsm8k: strict-match)
    note: str | None = None
    assumed: tuple[str, ...] = ()  # settings the source does not state ("shots", "metric")
    offline_task: str | None = None  # a shipped task that stands in offline (e.g. smallllm_mmlu for mmlu)
    offline_subtasks: tuple[str, ...] = ()  # subtasks of a group run offline on stand-in data
    unsafe_code: bool = False  # executes model-written code

    @property
    def result_key(self) -> str:
        return f"{self.metric},{self.filter}"

    def offline_names(self) -> list[str]:
        """The tasks that stand for this row offline."""
        if self.offline_task:
            return [self.offline_task]
        return list(self.offline_subtasks) or [self.task]


@dataclass(frozen=True)
class PaperTable:
    """A family's paper and every row of its benchmark tables."""

    family: str
    model: str
    paper: str
    arxiv: str
    rows: list[PaperRow]
    sources: dict[str, str] = field(default_factory=dict)  # table -> where its numbers were read


def paper_families() -> list[str]:
    return sorted(p.stem for p in PAPER_TABLES.glob("*.yaml"))


def load_paper_table(family: str) -> PaperTable:
    """The family's tables from its data file; a wrong row is an error naming the file, the row and the field."""
    path = PAPER_TABLES / f"{family}.yaml"
    if not path.is_file():
        raise UsageValueError(f"no paper table for family {family!r}; available: {', '.join(paper_families())}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    rows, sources = [], {}
    for table in data["tables"]:
        sources[table["table"]] = " ".join(str(table["source"]).split())
        for raw in table["rows"]:
            where = f"{path.name}: {table['table']} / {raw.get('benchmark')}"
            unknown = sorted(set(raw) - _ROW_KEYS)
            if unknown:
                raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(_ROW_KEYS)}")
            if not isinstance(raw.get("shots"), int) or raw["shots"] < 0:
                raise ValueError(f"{where}: shots must be a non-negative integer, got {raw.get('shots')!r}")
            paper = raw.get("paper")
            if paper is not None and not (isinstance(paper, (int, float)) and 0 <= paper <= 100):
                raise ValueError(f"{where}: paper must be a percentage or null, got {paper!r}")
            offline = raw.get("offline") or {}
            rows.append(PaperRow(
                table=table["table"], benchmark=raw["benchmark"], task=raw["task"], shots=raw["shots"],
                metric=raw["metric"], paper=None if paper is None else float(paper), filter=raw.get("filter", "none"),
                note=raw.get("note"), assumed=tuple(raw.get("assumed") or ()), offline_task=offline.get("task"),
                offline_subtasks=tuple(offline.get("subtasks") or ()), unsafe_code=bool(raw.get("unsafe_code")),
            ))
    return PaperTable(data["family"], data["model"], data["paper"], str(data["arxiv"]), rows, sources)


@functools.lru_cache(maxsize=1)
def paper_task_manager():
    """A TaskManager over lm-eval's tasks and the package's shipped ones (indexing lm-eval's task files takes
    seconds, so the one index is kept)."""
    from lm_eval.tasks import TaskManager

    from .lm_eval_tasks import TASKS_DIR

    return TaskManager(include_path=[str(TASKS_DIR)], include_defaults=True)


def registered_config(manager, name: str) -> dict[str, Any]:
    """The configuration lm-eval resolves for a registered task (its YAML with includes and functions resolved)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = manager.task_index.get(name)
    if entry is None or entry.yaml_path is None:
        raise UsageValueError(f"{name!r} is not a task lm-eval knows (with the package's task folder)")
    return load_yaml(entry.yaml_path, resolve_func=True)


def offline_overrides(config: dict[str, Any], name: str, data_dir: Path = OFFLINE_DATA) -> dict[str, Any]:
    """Overrides that point a registered task at its stand-in files: the split it scores (test, else validation)
    reads `eval.jsonl`; its few-shot split (fewshot, else training) reads `fewshot.jsonl` when there is one;
    every other split is switched off."""
    folder = data_dir / name
    if not (folder / EVAL_FILE).is_file():
        raise FileNotFoundError(f"no offline stand-in data for {name!r} (expected {folder / EVAL_FILE})")
    eval_key = "test_split" if config.get("test_split") else "validation_split"
    splits: dict[str, str | None] = {"training_split": None, "validation_split": None, "test_split": None,
                                     "fewshot_split": None}
    splits[eval_key] = config[eval_key]
    files = {config[eval_key]: str(folder / EVAL_FILE)}
    if (folder / FEWSHOT_FILE).is_file():
        fewshot_key = "fewshot_split" if config.get("fewshot_split") else "training_split"
        fewshot_name = config.get(fewshot_key) or "train"
        splits[fewshot_key] = fewshot_name
        files[fewshot_name] = str(folder / FEWSHOT_FILE)
    return {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files}, **splits}


def suite_spec(table: PaperTable, *, offline: bool = False, include_unsafe: bool = False, manager=None,
               data_dir: Path = OFFLINE_DATA) -> dict[str, Any]:
    """One inline lm-eval group holding every row's task with the paper's shots (and, offline, the stand-in data).
    Rows whose task executes code are left out unless `include_unsafe`."""
    manager = manager or paper_task_manager()
    members: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for row in table.rows:
        if row.unsafe_code and not include_unsafe:
            continue
        for name in (row.offline_names() if offline else [row.task]):
            if name in seen:  # one task in two rows: one run serves both, if their shots agree
                if seen[name] != row.shots:
                    raise ValueError(f"{table.family}: {name} appears with {seen[name]} and {row.shots} shots")
                continue
            seen[name] = row.shots
            if name not in manager.all_tasks:
                raise UsageValueError(f"{table.family}: task {name!r} ({row.benchmark}) is not known to lm-eval")
            kind = "group" if name in manager.all_groups else "task"
            member: dict[str, Any] = {kind: name, "num_fewshot": row.shots}
            if offline and name not in _shipped_tasks() and kind == "task":
                member.update(offline_overrides(registered_config(manager, name), name, data_dir))
            members.append(member)
    return {"group": f"smallllm_paper_{table.family}", "task": members}


@contextlib.contextmanager
def registered_suite(spec: dict[str, Any], manager):
    """Registers the suite with `manager` as a group read from a YAML file (in a temporary folder) for the duration
    of the block; yields its name. A file, not an inline dict: lm-eval applies per-member overrides (the shots)
    correctly only to groups read from a file (an inline group hands its own `task` list down to nested groups'
    members as an override). Only the temporary folder is indexed, so lm-eval's own index is built once."""
    from lm_eval.tasks._index import TaskIndex

    with tempfile.TemporaryDirectory(prefix="smallllm-paper-") as folder:
        path = Path(folder) / f"{spec['group']}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
        added = TaskIndex().build([Path(folder)])
        manager.task_index.update(added)
        try:
            yield spec["group"]
        finally:
            for name in added:
                manager.task_index.pop(name, None)


def _shipped_tasks() -> set[str]:
    from .harness import local_task_names

    return set(local_task_names())


@dataclass
class PaperComparison:
    """Ours beside the paper's, row by row."""

    table: PaperTable
    ours: dict[str, float | None]  # benchmark -> our score in percent (None: not run)
    offline: bool
    limit: int | float | None
    skipped: dict[str, str] = field(default_factory=dict)  # benchmark -> why it was not run

    def to_markdown(self) -> str:
        lines = [f"{self.table.paper} (arXiv {self.table.arxiv}); paper model: {self.table.model}", "",
                 "| table | benchmark | lm-eval task | shots | metric | paper | ours | ours - paper |",
                 "|---|---|---|---|---|---|---|---|"]
        for row in self.table.rows:
            ours = self.ours.get(row.benchmark)
            paper = "—" if row.paper is None else f"{row.paper:.2f}"
            mine = self.skipped.get(row.benchmark, "—") if ours is None else f"{ours:.2f}"
            delta = "—" if ours is None or row.paper is None else f"{ours - row.paper:+.2f}"
            setting = f"{row.shots}" + ("*" if "shots" in row.assumed else "")
            metric = row.metric + ("" if row.filter == "none" else f" ({row.filter})") + \
                ("*" if "metric" in row.assumed else "")
            lines.append(f"| {row.table} | {row.benchmark} | {row.task} | {setting} | {metric} | {paper} | {mine} | "
                         f"{delta} |")
        lines.append("")
        lines.append("\\* not stated in the source we read; assumed. — : not confirmed from a source / not run.")
        lines += [f"- {row.benchmark}: {row.note}" for row in self.table.rows if row.note]
        if self.offline:
            lines.append("Offline stand-in data: these scores check the wiring and are not comparable to the paper's.")
        elif self.limit is not None:
            lines.append(f"limit={self.limit}: a subset of each benchmark; not comparable to the paper's scores.")
        for table, source in self.table.sources.items():
            lines.append(f"- {table}: {source}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "family": self.table.family, "paper": self.table.paper, "arxiv": self.table.arxiv,
            "paper_model": self.table.model, "offline": self.offline, "limit": self.limit,
            "rows": [{"table": r.table, "benchmark": r.benchmark, "task": r.task, "shots": r.shots,
                      "metric": r.metric, "filter": r.filter, "assumed": list(r.assumed), "paper": r.paper,
                      "ours": self.ours.get(r.benchmark), "skipped": self.skipped.get(r.benchmark)}
                     for r in self.table.rows],
            "sources": self.table.sources,
        }


def row_scores(table: PaperTable, results: dict, *, offline: bool) -> dict[str, float | None]:
    """Each row's score in percent from lm-eval's results: the group's aggregate for a group, the mean over the
    row's offline subtasks offline."""
    found = {**results.get("results", {}), **results.get("groups", {})}
    scores: dict[str, float | None] = {}
    for row in table.rows:
        values = []
        for name in (row.offline_names() if offline else [row.task]):
            value = found.get(name, {}).get(row.result_key)
            if isinstance(value, (int, float)) and not math.isnan(value):
                values.append(float(value))
        scores[row.benchmark] = 100 * sum(values) / len(values) if values else None
    return scores


def run_paper_table(model, family: str, *, tokenizer=None, offline: bool = False, limit: int | float | None = None,
                    batch_size: int | str = 1, device: str | None = None, dtype: str = "auto",
                    confirm_run_unsafe_code: bool = False, seed: int = 0,
                    max_gen_toks: int | None = None) -> PaperComparison:
    """Run the family's paper suite on `model` (path, Hub id, or loaded model with `tokenizer`) through lm-eval.
    `max_gen_toks` caps generative tasks' answers (quick checks; the tasks' own budget otherwise)."""
    from .harness import run_benchmarks

    table = load_paper_table(family)
    manager = paper_task_manager()
    spec = suite_spec(table, offline=offline, include_unsafe=confirm_run_unsafe_code, manager=manager)
    with registered_suite(spec, manager) as name:
        results = run_benchmarks(model, [name], tokenizer=tokenizer, limit=limit, batch_size=batch_size,
                                 device=device, dtype=dtype, confirm_run_unsafe_code=confirm_run_unsafe_code,
                                 seed=seed, manager=manager,
                                 gen_kwargs={"max_gen_toks": max_gen_toks} if max_gen_toks else None)
    skipped = {r.benchmark: "needs --confirm-run-unsafe-code" for r in table.rows
               if r.unsafe_code and not confirm_run_unsafe_code}
    return PaperComparison(table, row_scores(table, results, offline=offline), offline, limit, skipped)


def resolved_settings(spec: dict[str, Any], manager=None) -> dict[str, dict[str, Any]]:
    """{leaf task: {"num_fewshot", "metrics", "filters", "dataset_path"}} as lm-eval builds the suite: what a
    test compares with the paper's settings."""
    manager = manager or paper_task_manager()
    with registered_suite(spec, manager) as name:
        loaded = manager.load([name])
    out = {}
    for name, task in loaded["tasks"].items():
        config = task.config
        out[name] = {
            "num_fewshot": config.num_fewshot,
            "metrics": [m["metric"] if isinstance(m["metric"], str) else getattr(m["metric"], "__name__", "")
                        for m in (config.metric_list or [])],
            "filters": [f["name"] for f in (config.filter_list or [])] or ["none"],
            "dataset_path": config.dataset_path,
        }
    return out


__all__ = ["OFFLINE_DATA", "PAPER_TABLES", "PaperComparison", "PaperRow", "PaperTable",
           "load_paper_table", "offline_overrides", "paper_families", "paper_task_manager", "registered_config",
           "resolved_settings", "row_scores", "run_paper_table", "registered_suite", "suite_spec"]
