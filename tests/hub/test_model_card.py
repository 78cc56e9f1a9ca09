"""Model cards render from the family templates with the run's facts and valid Hub metadata."""

import re

import pytest
import yaml
from huggingface_hub import ModelCard

from hf_smallllm.families import FAMILIES
from hf_smallllm.hub.model_card import PLACEHOLDER_PATTERN, SnapshotRow, mixture_table, render_model_card

from .conftest import make_checkpoint

ARXIV = {"tinyllama": "2401.02385", "geb": "2406.09900", "chuxin": "2405.04828", "btlm": "2309.11568",
         "skywork": "2310.19341"}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_renders_without_placeholders(family, tmp_path):
    folder = make_checkpoint(tmp_path / "checkpoint-3", 3, family=family)
    card = render_model_card(folder, f"me/{family}-tiny",
                             snapshots=[SnapshotRow("step3-tokens0.0000123B", 3, 12288)])
    text = str(card)
    assert not PLACEHOLDER_PATTERN.search(text)
    assert f"arXiv:{ARXIV.get(family, FAMILIES[family].citation.arxiv)}" in text and "@misc{" in text
    assert f"smallllm_{family}" in text  # architecture table from config.json
    assert 'revision="step3-tokens0.0000123B"' in text and "load_snapshot(\"me/" in text
    data = yaml.safe_load(text.split("---")[1])
    assert data["license"] == "apache-2.0" and data["language"] and family in data["tags"]
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert ModelCard(text).data.to_dict()["model_name"] == f"{family}-tiny"


def test_card_reads_the_run(run_dir):
    card = render_model_card(run_dir / "checkpoint-30", "me/run", license="mit", language=["en", "zh"],
                             datasets=["me/corpus"], tags=["research"], base_model=None)
    text = str(card)
    assert card.data.license == "mit" and card.data.datasets == ["me/corpus"] and "research" in card.data.tags
    assert card.data.language == ["en", "zh"]
    assert "Training tokens: 123K (122,880 tokens) in 30 optimizer steps" in text
    assert "Sequence length: 128 tokens, document packing" in text
    # the latest per-domain eval of metrics.jsonl; ppl recorded for kjv, derived from the loss for zh_poetry
    assert "| kjv | 2.5000 | 25.00 |" in text
    assert re.search(r"\| zh_poetry \| 4\.5000 \| 90\.02 \|", text)
    assert "| kjv | 0.6 |" in text and "phase 1 (to 100%)" in text
    assert "no intermediate checkpoints" in text


def test_mixture_table_shapes():
    assert mixture_table(None) == ""
    plain = mixture_table({"data": {"sources": [{"name": "a", "weight": 3}, {"name": "b", "weight": 1}]}})
    assert "| a | 0.75 |" in plain and "| b | 0.25 |" in plain
    ramp = mixture_table({"data": {"sources": [{"name": "a"}, {"name": "b"}], "mixture": [
        {"until": 0.5, "weights": {"a": 1.0}},
        {"until": 1.0, "weights": {"a": 0.5, "b": 0.5}, "end_weights": {"a": 0.2, "b": 0.8}}]}})
    assert "| b | 0 | 0.5 → 0.8 |" in ramp
