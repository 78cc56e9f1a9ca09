"""`eval paper`: the papers' tables as data, the lm-eval configurations they resolve to (the paper's shots and
metric for every row, offline stand-ins included), and a run on a trained tiny checkpoint."""

import json

import pytest

from hf_smallllm.eval.paper_tables import (
    OFFLINE_DATA,
    load_paper_table,
    paper_families,
    paper_task_manager,
    registered_config,
    resolved_settings,
    run_paper_table,
    suite_spec,
)
from hf_smallllm.families import FAMILY_NAMES
from hf_smallllm_cli import main

# What issue 32 found missing, as (benchmark task, shots): each must be in the family's suite with those shots.
REQUIRED = {
    "tinyllama": {("bbh_fewshot", 3), ("drop", 3), ("mmlu", 5), ("smallllm_humaneval", 0), ("hellaswag", 0)},
    "chuxin": {("copa", 0), ("sciq", 0), ("mmlu", 5), ("gsm8k", 5), ("smallllm_humaneval", 0)},
    "btlm": {("social_iqa", 0), ("race", 0), ("nq_open", 0), ("triviaqa", 0)},
    "skywork": {("triviaqa", 0), ("race", 0), ("gsm8k", 8), ("ceval-valid", 5), ("cmmlu", 5)},
    "geb": {("mmlu", 5), ("ceval-valid", 5), ("cmmlu", 5)},
}


@pytest.fixture(scope="module")
def manager():
    return paper_task_manager()


def test_every_family_has_a_table_with_the_papers_tasks():
    assert paper_families() == sorted(FAMILY_NAMES)
    for family, required in REQUIRED.items():
        table = load_paper_table(family)
        assert table.arxiv and table.sources and all(table.sources.values())
        assert required <= {(row.task, row.shots) for row in table.rows}, family
        assert all(row.table in table.sources for row in table.rows)
    skywork = {row.benchmark: row for row in load_paper_table("skywork").rows}
    assert skywork["GSM8K"].shots == 8 and skywork["GSM8K"].paper == 55.8
    assert skywork["GSM8K"].result_key == "exact_match,strict-match"
    chuxin = {row.benchmark: row for row in load_paper_table("chuxin").rows}  # the official README's Base rows
    assert all(row.paper is not None for row in chuxin.values())
    assert (chuxin["ARC-c"].paper, chuxin["SciQ"].paper, chuxin["C-Eval"].paper) == (39.68, 95.0, 39.31)


def test_a_wrong_row_is_refused(tmp_path, monkeypatch):
    import hf_smallllm.eval.paper_tables as paper_tables

    (tmp_path / "x.yaml").write_text(
        "family: x\nmodel: m\npaper: p\narxiv: '1'\ntables:\n  - table: T\n    source: s\n    rows:\n"
        "      - {benchmark: B, task: piqa, shots: -1, metric: acc, paper: 50}\n")
    monkeypatch.setattr(paper_tables, "PAPER_TABLES", tmp_path)
    with pytest.raises(ValueError, match=r"x.yaml: T / B: shots must be a non-negative integer"):
        paper_tables.load_paper_table("x")
    with pytest.raises(ValueError, match="no paper table for family 'nope'"):
        paper_tables.load_paper_table("nope")


def test_the_registered_tasks_have_the_papers_metric_and_the_suite_its_shots(manager):
    """Online: every row names a task or group lm-eval knows; a task's own configuration has the row's metric and
    filter, and the suite sets the row's shots on it."""
    for family in paper_families():
        table = load_paper_table(family)
        spec = suite_spec(table, include_unsafe=True, manager=manager)
        shots = {member.get("task") or member.get("group"): member["num_fewshot"] for member in spec["task"]}
        for row in table.rows:
            assert shots[row.task] == row.shots, (family, row.benchmark)
            if row.task in manager.all_groups:
                continue  # checked through its offline subtasks below
            config = registered_config(manager, row.task)
            assert row.metric in [m["metric"] for m in config["metric_list"] if isinstance(m["metric"], str)] \
                or row.task == "smallllm_humaneval", (family, row.benchmark)
            filters = [f["name"] for f in config.get("filter_list") or []] or ["none"]
            assert row.filter in filters, (family, row.benchmark, filters)


def test_the_offline_suites_resolve_to_the_papers_shots_and_metrics(manager):
    """What lm-eval builds from each offline suite: every leaf task under every row has the row's shots, metric and
    filter, and reads the bundled stand-in data (or a shipped task's data), never a Hub data set."""
    for family in paper_families():
        table = load_paper_table(family)
        settings = resolved_settings(suite_spec(table, offline=True, include_unsafe=True, manager=manager), manager)
        for row in table.rows:
            leaves = [name for name in settings
                      if any(name == n or name.startswith(n + "_") for n in row.offline_names())]
            assert leaves, (family, row.benchmark)
            for name in leaves:
                got = settings[name]
                assert got["num_fewshot"] == row.shots, (family, row.benchmark, name)
                assert row.metric in got["metrics"] or (row.metric == "pass@1" and got["metrics"] == ["pass_at_k"])
                assert row.filter in got["filters"], (family, row.benchmark, name)
                assert got["dataset_path"] in ("json", None), (family, name)  # None: a shipped custom_dataset


def test_fewshot_stand_ins_hold_enough_examples():
    """lm-eval's default sampler draws shots + 1 documents (it may drop the evaluated one)."""
    for family in paper_families():
        for row in load_paper_table(family).rows:
            for name in row.offline_names():
                fewshot = OFFLINE_DATA / name / "fewshot.jsonl"
                if row.shots and fewshot.is_file():
                    rows = [json.loads(line) for line in fewshot.read_text(encoding="utf-8").splitlines()]
                    assert len(rows) >= row.shots, (name, len(rows))


@pytest.mark.slow
def test_a_checkpoint_runs_a_papers_suite_offline(trained_checkpoint):
    comparison = run_paper_table(str(trained_checkpoint), "tinyllama", offline=True, limit=2, device="cpu",
                                 batch_size=4, max_gen_toks=8)
    for row in comparison.table.rows:
        if row.unsafe_code:
            assert comparison.ours[row.benchmark] is None and "confirm" in comparison.skipped[row.benchmark]
        else:
            assert 0.0 <= comparison.ours[row.benchmark] <= 100.0, row.benchmark
    table = comparison.to_markdown()
    assert "| Table 2 | HellaSwag | hellaswag | 0 | acc_norm | 59.20 |" in table
    assert "not comparable" in table


def test_cli_prints_the_table_without_a_model(capsys):
    assert main(["eval", "paper", "--family", "skywork"]) == 0
    out = capsys.readouterr().out
    assert "| Table 5 | GSM8K | gsm8k | 8 | exact_match (strict-match) | 55.80 | — | — |" in out
    assert "arXiv 2310.19341" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "paper", "--family", "nope"])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_cli_runs_a_suite_offline_and_writes_json(trained_checkpoint, tmp_path, capsys):
    output = tmp_path / "geb.json"
    assert main(["eval", "paper", "--family", "geb", "--model", str(trained_checkpoint), "--offline", "--limit", "1",
                 "--device", "cpu", "--output", str(output)]) == 0
    assert "| general benchmarks | MMLU | mmlu | 5* | acc | 31.20 |" in capsys.readouterr().out
    data = json.loads(output.read_text())
    assert data["offline"] and data["model"] == str(trained_checkpoint)
    assert [row["benchmark"] for row in data["rows"]] == ["MMLU", "C-Eval", "CMMLU"]
    assert all(0 <= row["ours"] <= 100 for row in data["rows"])
