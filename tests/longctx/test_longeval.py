"""The LongEval-style lines task: the bundled records are the generator's output, and the local lm-eval task runs
offline on a tiny model (SCROLLS, the other long-context suite BTLM reports, is lm-eval's own and reads the Hub)."""

import json

import pytest

from hf_smallllm.eval.lm_eval_tasks.smallllm_data import BENCHMARKS
from hf_smallllm.longctx.longeval import LINE_COUNTS, line_retrieval_records


def test_bundled_records_are_the_generators_output():
    rows = [json.loads(line) for line in (BENCHMARKS / "longeval" / "lines_test.jsonl").read_text().splitlines()]
    assert rows == line_retrieval_records()
    for row in rows:
        lines = row["context"].splitlines()[1:]
        assert len(lines) == row["num_lines"] and len(set(lines)) == len(lines)
        target = lines[row["target_line"]]
        assert target.endswith(f"<{row['answer']}>") and target.split(":")[0][5:] in row["question"]
    assert sorted({r["num_lines"] for r in rows}) == list(LINE_COUNTS)
    with pytest.raises(ValueError, match="line count"):
        line_retrieval_records([0])


@pytest.mark.slow
def test_lines_task_runs_offline_through_lm_eval(corpus_tokenizer, tmp_path):
    import torch

    from hf_smallllm import FAMILIES, preset_config
    from hf_smallllm.eval.harness import run_benchmarks, summary

    torch.manual_seed(0)
    model = FAMILIES["chuxin"].causal_lm_class(preset_config("chuxin", "tiny", vocab_size=len(corpus_tokenizer),
                                                             max_position_embeddings=4096))
    model.save_pretrained(tmp_path / "model")
    corpus_tokenizer.save_pretrained(tmp_path / "model")
    results = run_benchmarks(str(tmp_path / "model"), ["smallllm_longeval_lines"], limit=2, device="cpu")
    score = summary(results)["smallllm_longeval_lines"]
    assert 0.0 <= score["exact_match"] <= 1.0
    assert results["n-samples"]["smallllm_longeval_lines"]["effective"] == 2
