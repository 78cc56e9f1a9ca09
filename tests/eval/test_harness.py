"""lm-eval end to end and offline: a trained tiny checkpoint runs as an ordinary `hf` model on the shipped MMLU
subset, the Chinese poet-attribution task and HumanEval (model-written code executed only with the opt-in)."""

import gzip
import json
import math

import pytest

from hf_smallllm.eval.code_execution import (
    ALLOW_ENV,
    CodeExecutionNotAllowed,
    build_predictions,
    estimate_pass_at_k,
    pass_at_k,
    run_program,
    sandbox_problem,
)
from hf_smallllm.eval.harness import TASKS_DIR, local_task_names, mmlu_subjects, run_benchmarks, summary

from .helpers import BENCHMARKS, read_jsonl

SUBJECTS = ["astronomy", "college_computer_science", "high_school_geography", "us_foreign_policy", "world_religions"]

# model-written code runs only in the bubblewrap sandbox (tests/eval/test_code_containment.py)
NEEDS_SANDBOX = pytest.mark.skipif(sandbox_problem() is not None, reason="no sandbox for code execution here")


def humaneval_problems() -> list[dict]:
    with gzip.open(BENCHMARKS / "humaneval" / "HumanEval.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_the_task_folder_is_an_include_path_as_it_is():
    from lm_eval.tasks import TaskManager

    from hf_smallllm.eval.lm_eval_tasks import SUBJECT_TEMPLATE, smallllm_data

    assert mmlu_subjects() == SUBJECTS
    assert set(local_task_names()) == {"smallllm_mmlu", "smallllm_zh_poet", "smallllm_humaneval",
                                       "smallllm_longeval_lines",
                                       *(f"smallllm_mmlu_{s}" for s in SUBJECTS)}
    for path in TASKS_DIR.glob("*.yaml"):  # nothing left to render
        assert "${" not in path.read_text(encoding="utf-8"), path
    template = SUBJECT_TEMPLATE.read_text(encoding="utf-8")
    for subject in SUBJECTS:  # the subject files are the template's output (write_mmlu_subject_tasks)
        expected = template.replace("${subject_words}", subject.replace("_", " ")).replace("${subject}", subject)
        assert (TASKS_DIR / f"smallllm_mmlu_{subject}.yaml").read_text(encoding="utf-8") == expected
    manager = TaskManager(include_path=[str(TASKS_DIR)], include_defaults=False)
    assert set(local_task_names()) <= set(manager.all_tasks)
    data = smallllm_data.load({"test": "mmlu/astronomy_test.jsonl", "dev": "mmlu/astronomy_dev.jsonl"}, version=1.0)
    assert data["test"].num_rows == len(read_jsonl(BENCHMARKS / "mmlu" / "astronomy_test.jsonl"))


def test_shipped_multiple_choice_data_is_well_formed():
    for subject in SUBJECTS:
        rows = read_jsonl(BENCHMARKS / "mmlu" / f"{subject}_test.jsonl")
        assert rows and all(len(r["choices"]) == 4 and r["answer"] in range(4) for r in rows)
    poems = read_jsonl(BENCHMARKS / "zh_poet" / "zh_poet_test.jsonl")
    assert len(poems) == 240
    for row in poems:
        assert len(set(row["choices"])) == 4 and row["answer"] in range(4) and row["text"] and row["title"]
    answers = [row["answer"] for row in poems]
    assert all(answers.count(i) > 30 for i in range(4)), "the correct letter must not be guessable from position"
    assert len(humaneval_problems()) == 164


@pytest.mark.slow
@NEEDS_SANDBOX
def test_lm_eval_end_to_end_offline(trained_checkpoint):
    results = run_benchmarks(str(trained_checkpoint), ["smallllm_mmlu", "smallllm_zh_poet", "smallllm_humaneval"],
                             limit=2, batch_size=4, device="cpu", confirm_run_unsafe_code=True,
                             gen_kwargs={"max_gen_toks": 24})
    scores = summary(results)
    assert results["config"]["model"] == str(trained_checkpoint)  # loaded by HFLM through the Auto classes
    for subject in SUBJECTS:
        assert 0.0 <= scores[f"smallllm_mmlu_{subject}"]["acc"] <= 1.0
    assert 0.0 <= scores["smallllm_mmlu"]["acc"] <= 1.0
    assert 0.0 <= scores["smallllm_zh_poet"]["acc"] <= 1.0
    assert scores["smallllm_humaneval"]["pass@1"] == 0.0  # a 64-wide model trained for seconds writes no solutions
    assert results["n-samples"]["smallllm_zh_poet"]["effective"] == 2
    assert results["n-samples"]["smallllm_humaneval"]["effective"] == 2


def test_humaneval_needs_the_opt_in(trained_checkpoint):
    with pytest.raises(Exception, match="(?i)unsafe"):
        run_benchmarks(str(trained_checkpoint), ["smallllm_humaneval"], limit=1, device="cpu")


@NEEDS_SANDBOX
def test_code_execution_runs_only_when_allowed_and_scores_canonical_solutions(monkeypatch):
    problems = humaneval_problems()[:3]
    references = [f"{p['test']}\ncheck({p['entry_point']})" for p in problems]
    right = build_predictions([[p["canonical_solution"]] for p in problems], problems)
    wrong = build_predictions([["    return None\n"] for _ in problems], problems)
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    with pytest.raises(CodeExecutionNotAllowed, match=ALLOW_ENV):
        pass_at_k(references, right)
    monkeypatch.setenv(ALLOW_ENV, "1")
    assert pass_at_k(references, right) == {"pass@1": 1.0}
    assert pass_at_k(references, wrong) == {"pass@1": 0.0}
    assert not run_program("while True:\n    pass\n", timeout=1.0)


def test_pass_at_k_estimator():
    assert estimate_pass_at_k(10, 0, 1) == 0.0
    assert estimate_pass_at_k(10, 10, 5) == 1.0
    assert estimate_pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert estimate_pass_at_k(5, 2, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))
    with pytest.raises(ValueError):
        estimate_pass_at_k(3, 4, 1)


def test_a_loaded_model_object_runs_too(trained_model, tokenizer):
    results = run_benchmarks(trained_model, "smallllm_zh_poet", tokenizer=tokenizer, limit=3, batch_size=3)
    assert results["n-samples"]["smallllm_zh_poet"]["effective"] == 3
    assert 0.0 <= summary(results)["smallllm_zh_poet"]["acc"] <= 1.0


@NEEDS_SANDBOX
def test_humaneval_task_scores_correct_programs_through_lm_eval(tmp_path, monkeypatch):
    """The shipped task's prompt, filter and metric wired together: an 'LM' answering with the canonical solutions
    gets pass@1 = 1, one answering with a wrong body 0."""
    import lm_eval
    from lm_eval.api.model import LM

    from hf_smallllm.eval.harness import task_manager

    solutions = {p["prompt"]: p["canonical_solution"] for p in humaneval_problems()}

    class Oracle(LM):
        def __init__(self, correct: bool):
            super().__init__()
            self.correct = correct

        def generate_until(self, requests):
            return [solutions[r.args[0]] if self.correct else "    return None\n" for r in requests]

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    monkeypatch.setenv(ALLOW_ENV, "1")
    manager = task_manager(["smallllm_humaneval"], [TASKS_DIR])
    for correct, expected in ((True, 1.0), (False, 0.0)):
        results = lm_eval.simple_evaluate(model=Oracle(correct), tasks=["smallllm_humaneval"], limit=3,
                                          task_manager=manager, confirm_run_unsafe_code=True)
        assert summary(results)["smallllm_humaneval"]["pass@1"] == expected


@NEEDS_SANDBOX
def test_the_humaneval_task_runs_without_the_package_importable(tmp_path):
    """Issue 31: `smallllm_code.py` imported hf_smallllm, so plain `lm_eval --include_path` failed for HumanEval.
    Loaded as lm-eval loads it (by file path), with every `hf_smallllm` import refused, it scores a canonical
    solution."""
    import subprocess
    import sys

    problem = humaneval_problems()[0]
    script = f"""
import importlib.util, json, sys

class RefuseThePackage:
    def find_spec(self, name, path=None, target=None):
        if name == "hf_smallllm" or name.startswith("hf_smallllm."):
            raise ImportError("hf_smallllm is not importable here")

sys.meta_path.insert(0, RefuseThePackage())
spec = importlib.util.spec_from_file_location("smallllm_code", {str(TASKS_DIR / "smallllm_code.py")!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
problem = json.loads({json.dumps(problem)!r})
program = problem["prompt"] + problem["canonical_solution"]
test = problem["test"] + "\\ncheck(" + problem["entry_point"] + ")"
print(json.dumps(module.pass_at_k([test], [[program]])))
assert not any(name.startswith("hf_smallllm") for name in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={"PATH": "/usr/bin:/bin", ALLOW_ENV: "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"pass@1": 1.0}
