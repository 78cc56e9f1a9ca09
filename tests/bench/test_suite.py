"""The model benchmark's machinery: twins that really compute the same function, paired rounds that alternate
their order, ratios and verdicts read from those rounds, and a complete (tiny) run of the suite and its runner."""

import json

import pytest
import torch

from hf_smallllm.bench.runner import run as run_suite
from hf_smallllm.bench.suite import (
    Row,
    SuiteSettings,
    format_markdown,
    measure_pair,
    median_confidence_interval,
    paired_rounds,
    verdict_summary,
    weight_bytes_per_decoded_token,
)
from hf_smallllm.bench.twins import reference_twin
from hf_smallllm.inference import can_pack_linears
from hf_smallllm_cli.bench import build_parser as bench_parser

from ..models.helpers import ALL_FAMILIES, random_ids, tiny_model


def bench_main(argv: list[str]) -> int:
    """`python -m benchmarks.run ARGS` without the CLI's error handling (errors raise)."""
    return run_suite(bench_parser().parse_args(argv))


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_reference_twin_computes_the_same_logits_from_the_same_tensors(family):
    model = tiny_model(family)
    twin, name = reference_twin(model)
    ids = random_ids(model.config.vocab_size, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(twin(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-5)
    expected = {"geb": "GlmForCausalLM", "btlm": "BTLMForCausalLM (eager ALiBi)"}.get(family, "LlamaForCausalLM")
    assert name == expected
    # the twin holds our tensors rather than copies (GLM's fused gate/up matrix is the one exception)
    shared = {p.data_ptr() for p in model.parameters()} & {p.data_ptr() for p in twin.parameters()}
    assert len(shared) >= len(list(twin.parameters())) - model.config.num_hidden_layers


def test_paired_rounds_alternate_which_side_runs_first():
    calls = []
    functions = {"ours": lambda: calls.append("ours"), "reference": lambda: calls.append("reference")}
    times = paired_rounds(functions, repeats=4)
    assert calls[:2] == ["ours", "reference"]  # warm-up
    assert calls[2:] == ["ours", "reference", "reference", "ours", "ours", "reference", "reference", "ours"]
    assert [len(v) for v in times.values()] == [4, 4] and all(t >= 0 for v in times.values() for t in v)
    self_timed = paired_rounds({"a": lambda: 2.0, "b": lambda: 3.0}, repeats=3, self_timed=True)
    assert self_timed == {"a": [2.0, 2.0, 2.0], "b": [3.0, 3.0, 3.0]}


def test_median_confidence_interval_uses_binomial_ranks():
    assert median_confidence_interval([1.0] * 5) is None  # 5 rounds cannot give 95%: P(all on one side) = 1/16
    assert median_confidence_interval([6, 1, 5, 2, 4, 3]) == (1, 6)  # n = 6: the extremes (1 - 2/64 = 96.9%)
    assert median_confidence_interval(list(range(1, 17))) == (4, 13)  # n = 16: ranks 4 and 13 (97.9%)
    assert median_confidence_interval(list(range(1, 17)), level=0.90) == (5, 12)  # 92.3%


def test_ratio_spread_and_verdict_come_from_the_rounds():
    tie = Row("x", "tiny", "decode", "tok/s", 99.0, 100.0, "Ref",
              round_ratios=[0.97, 0.99, 1.02, 1.01, 0.98, 0.985, 0.995, 1.03])
    assert tie.ratio == pytest.approx(0.9925) and tie.verdict == "tie"
    assert tie.ratio_interval == (0.97, 1.03)
    low, high = tie.ratio_range
    assert low == pytest.approx(0.98375) and high == pytest.approx(1.0125)
    behind = Row("x", "tiny", "prefill", "tok/s", 90.0, 100.0, "Ref",
                 round_ratios=[0.90, 0.91, 0.92, 0.93, 0.95, 0.99, 0.94, 0.92])
    assert behind.verdict == "behind"  # even the best round is below 1
    few = Row("x", "tiny", "prefill", "tok/s", 90.0, 100.0, "Ref", round_ratios=[0.99, 1.05, 0.98, 0.97])
    assert few.ratio_interval is None and few.verdict == "behind"  # too few rounds to call it a tie
    ahead = Row("x", "tiny", "memory", "MiB", 10.0, 12.0, "Ref", higher_is_better=False)
    assert ahead.ratio == pytest.approx(1.2) and ahead.verdict == "ahead" and ahead.ratio_range is None
    ceiling = Row("x", "tiny", "decode b1: fraction of bandwidth ceiling", "tok/s", 5.0, 8.0, is_comparison=False)
    assert ceiling.ratio == pytest.approx(0.625) and ceiling.verdict == ""
    summary = verdict_summary([tie, behind, ahead, ceiling])
    assert "1 rows at or above their target ratio" in summary and "1 below it but tied within noise" in summary
    assert "1 behind" in summary
    int4 = Row("x", "tiny", "decode b1: ours int4 vs llama.cpp q4_0", "tok/s", 5.4, 10.0, "Ref", target=0.5,
               round_ratios=[0.52, 0.54, 0.55, 0.53, 0.56, 0.51])
    assert int4.verdict == "ahead" and behind.target == 1.0  # judged against its own target, 0.5
    assert Row("x", "tiny", "m", "tok/s", 4.0, 10.0, target=0.5).verdict == "behind"
    assert "(target 0.50)" in format_markdown([int4], {"cpu": "test"})
    markdown = format_markdown([tie, ceiling], {"cpu": "test"}, repeats=8)
    assert "0.992 (0.970-1.030) tie" in markdown and "8 paired rounds per row" in markdown
    assert tie.to_dict()["ratio_interval_95"] == (0.97, 1.03)


def test_decoded_token_reads_every_weight_but_one_embedding_row():
    untied = tiny_model("tinyllama")
    total = sum(p.numel() * 4 for p in untied.parameters())
    assert weight_bytes_per_decoded_token(untied) == total - untied.get_input_embeddings().weight.numel() * 4
    tied = tiny_model("btlm")  # the tied embedding is read whole, as the output head
    assert weight_bytes_per_decoded_token(tied) == sum(p.numel() * 4 for p in tied.parameters())


@pytest.mark.parametrize("packing_pays", [False, True])
def test_measure_pair_reports_every_row_with_paired_ratios(packing_pays, monkeypatch):
    from hf_smallllm.inference import cpu_linear

    if packing_pays:  # tiny matrices never pack by themselves: lower the threshold and let packing win the timing
        if not can_pack_linears():
            pytest.skip("this torch build has no oneDNN CPU kernels")
        choose = cpu_linear.pack_linears_if_faster
        packed = lambda model: any(type(m) is cpu_linear.PackedLinear for m in model.modules())  # noqa: E731
        monkeypatch.setattr(cpu_linear, "_one_token_forward_seconds", lambda model: 1.0 if packed(model) else 2.0)
        monkeypatch.setattr(cpu_linear, "pack_linears_if_faster", lambda model: choose(model, min_weights=0))
    settings = SuiteSettings(prompt_length=32, decode_prompt_length=8, decode_steps=2, train_length=64, repeats=3)
    measured = []
    rows = measure_pair("tinyllama", "tiny", settings, bandwidth=lambda: measured.append(1) or 20e9)
    assert measured == [1]  # the ceiling is measured once, after the decode rows
    metrics = [row.metric for row in rows]
    expected = ["prefill tokens/s (prompt 32)", "decode tokens/s (batch 1)", "decode tokens/s (batch 8)",
                "prefill peak memory (prompt 32)", "forward+backward tokens/s (packed 2x64)",
                "forward+backward peak memory", "decode b1, plain nn.Linear: fraction of bandwidth ceiling"]
    if packing_pays:
        expected += ["CPU inference path: one-token forward, oneDNN-packed vs plain linears",
                     "packed linears: prefill tokens/s (prompt 32)", "packed linears: decode tokens/s (batch 1)",
                     "packed linears: decode tokens/s (batch 8)",
                     "decode b1, oneDNN-packed linears: fraction of bandwidth ceiling"]
    assert sorted(metrics) == sorted(expected)
    for row in rows:
        assert row.ours > 0 and row.reference > 0
        if "tokens/s" in row.metric and "ceiling" not in row.metric:
            assert len(row.round_ratios) == 3 and row.verdict in {"ahead", "tie", "behind"}
    memory = next(row for row in rows if row.metric == "forward+backward peak memory")
    assert memory.ratio == pytest.approx(1.0, rel=0.05)  # same activations on both sides
    if packing_pays:
        choice = next(row for row in rows if row.metric.startswith("CPU inference path"))
        assert (choice.ours, choice.reference, choice.verdict) == (1000.0, 2000.0, "")
        assert "kept oneDNN-packed linears" in choice.note
    ceiling = next(row for row in rows if row.metric.startswith("decode b1, plain"))
    assert ceiling.reference == pytest.approx(20e9 / weight_bytes_per_decoded_token(tiny_model("tinyllama")))


def test_measure_pair_reports_sizes_that_do_not_fit_as_not_measured():
    rows = measure_pair("skywork", "published", SuiteSettings(memory_budget_bytes=2**30))
    assert len(rows) == 1 and rows[0].ours is None and rows[0].note.startswith("not measured: needs ~")


def test_runner_writes_json_and_markdown(tmp_path, capsys):
    args = ["--quick", "--sizes", "tiny", "--families", "btlm", "--skip-options", "--skip-footprint",
            "--repeats", "2", "--output-dir", str(tmp_path)]
    assert bench_main(args) == 0
    result = json.loads((tmp_path / "models-quick.json").read_text())
    assert result["machine"]["read_bandwidth_GBps"] > 0 and result["machine"]["threads"] >= 1
    prefill = next(r for r in result["rows"] if r["metric"].startswith("prefill tokens/s"))
    assert prefill["reference_name"] == "BTLMForCausalLM (eager ALiBi)" and len(prefill["round_ratios"]) == 2
    markdown = (tmp_path / "models-quick.md").read_text()
    assert "| btlm | tiny | prefill tokens/s (prompt 256) |" in markdown
    assert "ours vs reference, same settings" in markdown
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match="--repeats must be at least 1"):
        bench_main(["--repeats", "0", "--output-dir", str(tmp_path)])
    with pytest.raises(ValueError, match="--sizes must be among"):
        bench_main(["--sizes", "huge", "--output-dir", str(tmp_path)])


def test_read_bandwidth_takes_the_fastest_kernel(monkeypatch):
    from hf_smallllm.bench import measure

    rates = measure.read_bandwidths(gigabytes=0.05, repeats=1)
    assert set(rates) == {"sum", "dot", "matrix-vector"} and all(rate > 0 for rate in rates.values())
    monkeypatch.setattr(measure, "read_bandwidths", lambda *a: {"sum": 2.0, "dot": 3.0, "matrix-vector": 1.0})
    assert measure.read_bandwidth_bytes_per_second() == 3.0


def test_ceiling_rows_say_when_the_weights_fit_in_cache(monkeypatch):
    from hf_smallllm.bench import measure
    from hf_smallllm.bench.suite import decode_ceiling_rows

    model = tiny_model("tinyllama")
    monkeypatch.setattr(measure, "last_level_cache_bytes", lambda: 300 * 2**20)
    (row,) = decode_ceiling_rows("tinyllama", "tiny", model, {"plain nn.Linear": 100.0}, 20e9)
    assert "fit in the 300 MiB last-level cache" in row.note
    monkeypatch.setattr(measure, "last_level_cache_bytes", lambda: None)
    (row,) = decode_ceiling_rows("tinyllama", "tiny", model, {"plain nn.Linear": 100.0}, 20e9)
    assert row.note.endswith("of the ceiling")
