"""Benchmarks through EleutherAI's lm-evaluation-harness, with the package's models as ordinary `hf` models.

lm-eval's `hf` model (`HFLM`) loads a path with `AutoConfig`/`AutoModelForCausalLM`, which resolve the package's
`smallllm_*` model types once `hf_smallllm` is imported. Importing this module imports the package (and so
registers them), so everything that goes through here (Python API, `hf-smallllm eval bench`,
`hf-smallllm eval lm-eval ...`) runs any saved checkpoint without remote code. A loaded model object works too.

Local tasks ship in `hf_smallllm/eval/lm_eval_tasks/`, a folder that is lm-eval's `--include_path` as it is (no
render step; its data are found relative to the folder):
- `smallllm_mmlu` (group) / `smallllm_mmlu_<subject>`: five MMLU subjects, lm-eval's MMLU prompt, accuracy;
- `smallllm_zh_poet`: which of four poets wrote a Song ci (Chinese multiple choice), accuracy;
- `smallllm_humaneval`: HumanEval pass@1 by greedy generation; executes model-written code, so it only runs with
  `confirm_run_unsafe_code=True` (see `hf_smallllm.eval.code_execution`).
Every other lm-eval task name (hellaswag, piqa, arc_easy, ceval-valid, cmmlu, gsm8k, ...) resolves to lm-eval's
built-in task, which reads its data set from the Hub or the local `datasets` cache.
"""

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import UsageValueError
from ..inference.loading import default_device
from ..resources import RESOURCES
from .code_execution import ALLOW_ENV
from .lm_eval_tasks import TASKS_DIR

BENCHMARKS = RESOURCES / "benchmarks"
LOCAL_GROUPS = ("smallllm_mmlu", "smallllm_zh_poet", "smallllm_humaneval")


def mmlu_subjects(data_dir: str | Path = BENCHMARKS) -> list[str]:
    """The MMLU subjects present in the shipped (or given) benchmark folder."""
    return sorted(p.name[: -len("_test.jsonl")] for p in (Path(data_dir) / "mmlu").glob("*_test.jsonl"))


def local_task_names() -> list[str]:
    """Every task and group name the shipped task folder provides."""
    return sorted(p.stem for p in TASKS_DIR.glob("smallllm_*.yaml"))


def task_manager(tasks: Sequence[str], include_path: Sequence[str | Path] = ()):
    """A TaskManager over the given folders; lm-eval's several thousand built-in task files are indexed only when a
    requested task is not in them (indexing them takes seconds)."""
    from lm_eval.tasks import TaskManager

    paths = [str(p) for p in include_path]
    manager = TaskManager(include_path=paths, include_defaults=False)
    if all(task in manager.all_tasks for task in tasks):
        return manager
    return TaskManager(include_path=paths, include_defaults=True)


def load_lm(model, tokenizer=None, *, batch_size: int | str = 1, device: str | None = None, dtype: str = "auto",
            max_length: int | None = None, **model_args):
    """lm-eval's `HFLM` for a checkpoint path / Hub id or an already loaded model (then `tokenizer` is required)."""
    from lm_eval.models.huggingface import HFLM

    if isinstance(model, (str, os.PathLike)):
        return HFLM(pretrained=str(model), tokenizer=tokenizer, batch_size=batch_size, backend="causal",
                    device=device or default_device(), dtype=dtype, max_length=max_length, **model_args)
    if tokenizer is None:
        raise ValueError("an already loaded model needs its tokenizer")
    # backend given explicitly: lm-eval guesses it from transformers' built-in name tables, which registered
    # model types are not in.
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, backend="causal",
                max_length=max_length, **model_args)


@contextlib.contextmanager
def _code_execution_allowed(allowed: bool):
    previous = os.environ.get(ALLOW_ENV)
    if allowed:
        os.environ[ALLOW_ENV] = "1"
    try:
        yield
    finally:
        if allowed:
            if previous is None:
                os.environ.pop(ALLOW_ENV, None)
            else:
                os.environ[ALLOW_ENV] = previous


def run_benchmarks(model, tasks: Sequence[str | dict] | str, *, tokenizer=None, num_fewshot: int | None = None,
                   limit: int | float | None = None, batch_size: int | str = 1, device: str | None = None,
                   dtype: str = "auto", include_path: Sequence[str | Path] = (), confirm_run_unsafe_code: bool = False,
                   log_samples: bool = False, seed: int = 0, apply_chat_template: bool = False,
                   max_length: int | None = None, gen_kwargs: dict | None = None,
                   model_args: dict | None = None, manager=None) -> dict:
    """Evaluate `model` (a path, Hub id, or loaded model with `tokenizer`) on lm-eval tasks, the shipped local ones
    included; returns lm-eval's results dict (`results`, `groups`, `configs`, `n-shot`, ...).

    tasks: names, or lm-eval inline configs (dicts, e.g. a group of registered tasks with overrides, as
        `hf_smallllm.eval.paper_tables` builds them; then pass the `manager` that knows the tasks they name).

    limit: at most this many documents per task (a fraction for a share), for quick checks; scores with a limit
        are not comparable to published ones.
    confirm_run_unsafe_code: allow tasks that execute model-written code (HumanEval); read the safety note first.
    gen_kwargs: overrides of the generation settings of generative tasks, e.g. {"max_gen_toks": 256}.
    """
    import lm_eval

    tasks = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    tasks = [t for t in tasks if t]
    if not tasks:
        raise UsageValueError("no tasks given")
    names = [t for t in tasks if isinstance(t, str)]
    manager = manager or task_manager(names, [TASKS_DIR, *include_path])
    unknown = [t for t in names if t not in manager.task_index]  # the index holds groups registered later too
    if unknown:
        raise UsageValueError(f"unknown lm-eval task(s): {', '.join(unknown)}; local tasks: "
                         f"{', '.join(local_task_names())} (plus lm-eval's built-in tasks)")
    lm = load_lm(model, tokenizer, batch_size=batch_size, device=device, dtype=dtype, max_length=max_length,
                 **(model_args or {}))
    with _code_execution_allowed(confirm_run_unsafe_code):
        results = lm_eval.simple_evaluate(
            model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit, task_manager=manager,
            log_samples=log_samples, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
            fewshot_random_seed=seed, confirm_run_unsafe_code=confirm_run_unsafe_code,
            apply_chat_template=apply_chat_template, gen_kwargs=gen_kwargs,
        )
    if results is None:  # a non-zero rank of a distributed run
        return {}
    return results


def results_json(results: dict) -> dict:
    """lm-eval's results without the per-sample records, made JSON-serialisable (task configs hold functions; lm-eval's
    own serialiser turns them into strings)."""
    from lm_eval.utils import handle_non_serializable

    return json.loads(json.dumps({k: v for k, v in results.items() if k != "samples"},
                                 default=handle_non_serializable))


def run_lm_eval_cli(argv: Sequence[str]) -> None:
    """lm-eval's own command line (`lm-eval run|ls|validate ...`) with this package's models registered and the
    shipped task folder added to `--include_path`: the same as plain `lm_eval ... --include_path TASKS_DIR`."""
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    import hf_smallllm  # noqa: F401  (registers the smallllm_* model types with AutoModelForCausalLM)

    argv = list(argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    setup_logging()
    cli = HarnessCLI()
    # HarnessCLI.parse_args reads sys.argv; its parser takes a list. Its two special cases (options without a
    # subcommand mean `run`; a bare `run` prints run's help) are repeated here so that sys.argv is never swapped.
    subcommands = cli._subparsers.choices
    if len(argv) > 1 and argv[0] not in subcommands:
        argv.insert(0, "run")
    elif argv == ["run"]:
        subcommands["run"].print_help()
        return
    parsed = cli._parser.parse_args(argv)
    if hasattr(parsed, "include_path"):
        # lm-eval's flag takes one folder, its TaskManager a list: keep the user's folder and add ours.
        parsed.include_path = [str(TASKS_DIR)] + ([parsed.include_path] if parsed.include_path else [])
    cli.execute(parsed)


def results_table(results: dict) -> str:
    """lm-eval's own Markdown table of the results (and of the groups, when there are any)."""
    from lm_eval.utils import make_table

    table = make_table(results)
    if results.get("groups"):
        table += "\n" + make_table(results, "groups")
    return table


def summary(results: dict) -> dict[str, dict[str, float]]:
    """{task or group: {metric: value}} with lm-eval's `metric,filter` keys cut to the metric name; the standard
    errors, aliases and sample counts are dropped."""
    out = {}
    for section in ("results", "groups"):
        for task, metrics in results.get(section, {}).items():
            for key, value in metrics.items():
                metric = key.split(",")[0]
                if metric.endswith("_stderr") or metric in ("alias", "samples", "sample_len") \
                        or not isinstance(value, (int, float)):
                    continue
                out.setdefault(task, {})[metric] = value
    return out


__all__ = [
    "BENCHMARKS",
    "LOCAL_GROUPS",
    "TASKS_DIR",
    "load_lm",
    "local_task_names",
    "mmlu_subjects",
    "results_json",
    "results_table",
    "run_benchmarks",
    "run_lm_eval_cli",
    "summary",
    "task_manager",
]
