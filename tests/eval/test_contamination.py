"""Skywork's contamination check: a tiny model trained with half of a test split mixed in is flagged (delta1 well
below zero), the same model trained on the corpus alone is not; plus the arithmetic and input handling."""

import json

import pytest

from hf_smallllm.eval.contamination import SplitLoss, compare_splits, format_records, load_qa_texts
from hf_smallllm.eval.contamination_demo import demonstrate_contamination, qa_split_paths
from hf_smallllm.eval.losses import DocumentLoss

from .conftest import TRAIN_STEPS


@pytest.mark.slow
def test_leaked_test_split_is_flagged_and_a_clean_run_is_not(tokenizer, trained_model):
    demo = demonstrate_contamination(steps=TRAIN_STEPS, tokenizer=tokenizer, clean_model=trained_model)
    clean, leaked = demo.clean, demo.contaminated
    assert demo.leaked_samples == 130 and demo.test_samples == 261

    assert not clean.flagged
    assert abs(clean.delta1) < 0.05 and abs(clean.delta2) < 0.05
    assert "no sign of contamination" in clean.interpretation

    assert leaked.test_leakage and leaked.flagged and not leaked.in_domain_training
    assert leaked.delta1 <= -0.15 and leaked.delta1_z <= -2
    assert leaked.delta1 < clean.delta1 - 0.1
    assert "test split" in leaked.interpretation and "not trustworthy" in leaked.interpretation
    markdown = demo.to_markdown()
    assert "test leakage" in markdown and markdown.count("| delta1 = L_test - L_ref |") == 2
    assert json.loads(json.dumps(demo.to_dict()))["contaminated"]["flagged"] is True


def split(loss: float, spread: float = 0.05, samples: int = 50, tokens: int = 20) -> SplitLoss:
    losses = [DocumentLoss((loss + (spread if i % 2 else -spread)) * tokens, tokens, tokens + 1, 0)
              for i in range(samples)]
    return SplitLoss.from_losses(losses)


def test_deltas_signs_and_flags():
    report = compare_splits(train=split(1.0), test=split(1.2), reference=split(1.2))
    assert report.delta1 == pytest.approx(0.0, abs=1e-9) and report.delta2 == pytest.approx(0.2)
    assert report.in_domain_training and not report.test_leakage
    assert "train split" in report.interpretation
    leaked = compare_splits(train=split(1.2), test=split(0.9), reference=split(1.2))
    assert leaked.test_leakage and leaked.delta1 == pytest.approx(-0.3)
    # Large deltas on too few, too noisy samples are not evidence.
    noisy = compare_splits(train=split(1.2, 2.0, 3), test=split(0.9, 2.0, 3), reference=split(1.2, 2.0, 3))
    assert not noisy.flagged


def test_shipped_qa_splits_are_disjoint_and_of_equal_size():
    texts = {name: load_qa_texts(path) for name, path in qa_split_paths().items()}
    assert {len(t) for t in texts.values()} == {261}
    assert not set(texts["train"]) & set(texts["test"])
    assert not set(texts["test"]) & set(texts["reference"])
    assert texts["test"][0].startswith("Question: ") and "\nAnswer: " in texts["test"][0]


def test_records_formats_and_errors(tmp_path):
    assert format_records([{"q": "2+2?", "a": 4}], "{q} {a}") == ["2+2? 4"]
    assert format_records([{"text": "plain"}]) == ["plain"]
    with pytest.raises(ValueError, match="records:1: template field 'a' missing"):
        format_records([{"q": "x"}], "{q} {a}")
    with pytest.raises(ValueError, match="needs 'question' and 'answer'"):
        format_records([{"prompt": "x"}])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="not JSON lines"):
        load_qa_texts(bad)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_qa_texts(tmp_path / "missing.jsonl")
