"""`eval snapshots`: every snapshot of a run published to the local Hub server (and of the run folder itself) is
measured once, resumably; the table, CSV, JSON and plot are written; the results land in the model card's
model-index."""

import json

import pytest
import torch
from huggingface_hub import HfApi, ModelCard

import hf_smallllm.eval.snapshots_eval as snapshots_eval
from hf_smallllm.errors import UsageValueError
from hf_smallllm.eval.snapshots_eval import evaluate_snapshots, push_model_index
from hf_smallllm.hub import publish_run
from hf_smallllm.resources import CORPUS
from hf_smallllm_cli import main

from .conftest import STEPS, TOKENS_PER_STEP, make_checkpoint

SETTINGS = {"max_chars": 200, "max_documents": 2, "batch_size": 2, "device": "cpu", "progress": False}


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    path = tmp_path_factory.mktemp("domain") / "kjv.txt"
    path.write_text((CORPUS / "validation" / "en_kjv.txt").read_text(encoding="utf-8")[:2000], encoding="utf-8")
    return {"kjv": str(path)}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, corpus_tokenizer):
    """Three checkpoints of a tiny TinyLlama whose vocabulary fits the corpus tokenizer (the shared run fixture's
    models have 256 entries, too few to score real text)."""
    from hf_smallllm.families import FAMILIES, preset_config

    root = tmp_path_factory.mktemp("eval-run")
    for step in STEPS:
        folder = make_checkpoint(root / f"checkpoint-{step}", step, corpus_tokenizer)
        torch.manual_seed(step)
        model = FAMILIES["tinyllama"].causal_lm_class(
            preset_config("tinyllama", "tiny", vocab_size=len(corpus_tokenizer)))
        model.save_pretrained(folder)
    return root


@pytest.fixture
def published(hub, run_dir):
    endpoint, token = hub
    repo = "tests/snapshot-eval"
    publish_run(run_dir, repo, endpoint=endpoint, token=token, progress=False)
    return repo


def counting(monkeypatch):
    """Counts the revisions actually measured."""
    measured = []
    real = snapshots_eval.measure_snapshot

    def measure(folder, **kwargs):
        measured.append(str(folder))
        return real(folder, **kwargs)

    monkeypatch.setattr(snapshots_eval, "measure_snapshot", measure)
    return measured


@pytest.mark.slow
def test_every_snapshot_once_resumable_and_pushed(hub, published, run_dir, domain, tmp_path, monkeypatch):
    endpoint, token = hub
    measured = counting(monkeypatch)
    output = tmp_path / "out"
    table = evaluate_snapshots(published, output, domains=domain, tasks=["smallllm_zh_poet"], limit=2,
                               endpoint=endpoint, token=token, cache_dir=str(tmp_path / "cache"), **SETTINGS)
    assert len(measured) == 3
    assert [(r.step, r.tokens) for r in table.results] == [(s, s * TOKENS_PER_STEP) for s in STEPS]
    for result in table.results:
        assert result.metrics["ppl/kjv"] > 1 and result.metrics["ppl/average"] == pytest.approx(
            result.metrics["ppl/kjv"])
        assert 0 <= result.metrics["smallllm_zh_poet/acc"] <= 1
    assert len({r.metrics["ppl/kjv"] for r in table.results}) == 3  # three different models
    for suffix in ("md", "csv", "json", "png"):
        assert (output / f"snapshots.{suffix}").stat().st_size > 0
    assert (output / "snapshots.png").read_bytes()[:4] == b"\x89PNG"
    csv_lines = (output / "snapshots.csv").read_text().splitlines()
    assert csv_lines[0] == "revision,step,tokens,ppl/kjv,ppl/average,smallllm_zh_poet/acc" and len(csv_lines) == 4

    # A rerun measures nothing; a lost result is measured again; other settings measure everything again.
    again = evaluate_snapshots(published, output, domains=domain, tasks=["smallllm_zh_poet"], limit=2,
                               endpoint=endpoint, token=token, cache_dir=str(tmp_path / "cache"), **SETTINGS)
    assert len(measured) == 3 and all(r.resumed for r in again.results)
    assert [r.metrics for r in again.results] == [r.metrics for r in table.results]
    first = sorted((output / "revisions").glob("*.json"))[0]
    first.unlink()
    evaluate_snapshots(published, output, domains=domain, tasks=["smallllm_zh_poet"], limit=2,
                       endpoint=endpoint, token=token, cache_dir=str(tmp_path / "cache"), **SETTINGS)
    assert len(measured) == 4 and first.is_file()

    # The local run folder holds the same weights: the same perplexities.
    local = evaluate_snapshots(run_dir, tmp_path / "local", domains=domain, **SETTINGS)
    assert [r.revision for r in local.results] == [f"checkpoint-{s}" for s in STEPS]
    for hub_result, local_result in zip(table.results, local.results, strict=True):
        assert local_result.metrics["ppl/kjv"] == pytest.approx(hub_result.metrics["ppl/kjv"], rel=1e-5)

    # model-index on main: three revisions x three metrics, the card's other content kept; pushing again replaces.
    api = HfApi(endpoint=endpoint, token=token)
    before = open(api.hf_hub_download(published, "README.md", cache_dir=tmp_path / "c0")).read()
    push_model_index(table, published, endpoint=endpoint, token=token)
    push_model_index(table, published, endpoint=endpoint, token=token)
    card = ModelCard.load(api.hf_hub_download(published, "README.md", cache_dir=tmp_path / "c1"))
    results = card.data.eval_results
    assert len(results) == 9
    kjv = sorted((r for r in results if r.metric_type == "perplexity"), key=lambda r: r.metric_value)
    assert {r.metric_value for r in kjv} == {r.metrics["ppl/kjv"] for r in table.results}
    assert any("step20" in r.metric_name for r in results)
    assert {r.metric_args["step"] for r in results} == set(STEPS)
    assert before.split("---", 2)[2].strip() in str(card)  # the body of the card is unchanged


def test_an_interrupted_sweep_keeps_what_it_measured(hub, published, domain, tmp_path, monkeypatch):
    endpoint, token = hub
    real = snapshots_eval.measure_snapshot
    calls = []

    def failing(folder, **kwargs):
        calls.append(folder)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return real(folder, **kwargs)

    monkeypatch.setattr(snapshots_eval, "measure_snapshot", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        evaluate_snapshots(published, tmp_path / "out", domains=domain, endpoint=endpoint, token=token,
                           cache_dir=str(tmp_path / "cache"), **SETTINGS)
    assert len(list((tmp_path / "out" / "revisions").glob("*.json"))) == 1
    measured = counting(monkeypatch)
    table = evaluate_snapshots(published, tmp_path / "out", domains=domain, endpoint=endpoint, token=token,
                               cache_dir=str(tmp_path / "cache"), **SETTINGS)
    assert len(measured) == 2 and [r.resumed for r in table.results] == [True, False, False]


def test_cli_on_a_run_folder(run_dir, domain, tmp_path, capsys):
    output = tmp_path / "cli"
    assert main(["eval", "snapshots", str(run_dir), "--output", str(output), "--domain", f"kjv={domain['kjv']}",
                 "--max-chars", "200", "--max-documents", "2", "--device", "cpu", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "| revision | step | tokens | ppl/kjv | ppl/average |" in out and "| checkpoint-30 | 30 |" in out
    data = json.loads((output / "snapshots.json").read_text())
    assert [s["step"] for s in data["snapshots"]] == list(STEPS)
    assert not (output / "snapshots.png").exists()
    assert main(["eval", "snapshots", str(run_dir), "--push-model-index", "--output", str(output)]) == 2
    assert "needs a Hub repo id" in capsys.readouterr().err


def test_a_source_that_is_neither_a_run_nor_a_repo_is_one_line(hub, tmp_path):
    endpoint, token = hub
    with pytest.raises(UsageValueError, match="neither a run folder nor a Hub repo"):
        evaluate_snapshots("tests/no-such-repo", tmp_path, endpoint=endpoint, token=token, progress=False)
    empty = tmp_path / "empty-run"
    empty.mkdir()
    with pytest.raises(UsageValueError, match="no snapshots in run folder"):
        evaluate_snapshots(empty, tmp_path / "out", progress=False)
