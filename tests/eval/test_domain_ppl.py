"""Skywork's domain perplexity: truncation, first-token exclusion and the cross-tokenizer normalisation."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from hf_smallllm.eval.domain_ppl import (
    DomainPerplexityReport,
    default_max_chars,
    load_domain_documents,
    reference_token_counts,
    score_model,
)

MAX_CHARS = 150  # the tiny models' 512-token context fits 150 characters even at three byte tokens each


class MarkerTokenizer:
    """The same text in twice as many tokens: every token of `base` followed by a marker token (a new id)."""

    def __init__(self, base):
        self.base = base
        self.marker = len(base)

    def __call__(self, texts, add_special_tokens=False):
        rows = self.base(texts, add_special_tokens=False)["input_ids"]
        return {"input_ids": [[t for i in row for t in (i, self.marker)] for row in rows]}


class MarkerModel(nn.Module):
    """`base` read through `MarkerTokenizer`: after a text token it predicts the marker with certainty, after a
    marker it predicts the next text token exactly as `base` does. It assigns every text the same probability as
    `base`, in twice the tokens: one model under two tokenizations."""

    def __init__(self, base):
        super().__init__()
        self.base = base
        self.config = SimpleNamespace(max_position_embeddings=2 * base.config.max_position_embeddings)

    def forward(self, input_ids, attention_mask, use_cache=False):
        text_logits = self.base(input_ids=input_ids[:, ::2], attention_mask=attention_mask[:, ::2]).logits.float()
        batch, length, vocab = text_logits.shape
        logits = torch.full((batch, 2 * length, vocab + 1), -math.inf)
        logits[:, 0::2, vocab] = 0.0
        logits[:, 1::2, :vocab] = text_logits
        return SimpleNamespace(logits=logits[:, : input_ids.shape[1]])


@pytest.fixture(scope="module")
def documents():
    return load_domain_documents(max_chars=MAX_CHARS, max_documents=6)


def test_documents_are_cut_to_the_same_characters(documents):
    assert list(documents) == ["code_python", "en_kjv", "en_pydoc", "en_shakespeare", "zh_poetry"]
    assert all(1 < len(texts) <= 6 and all(0 < len(t) <= MAX_CHARS for t in texts) for texts in documents.values())


def test_one_model_under_two_tokenizations_gives_the_same_normalised_loss(trained_model, tokenizer, documents):
    marker_tokenizer, marker_model = MarkerTokenizer(tokenizer), MarkerModel(trained_model)
    for reference in (tokenizer, marker_tokenizer):
        counts = reference_token_counts(reference, documents)
        plain = score_model("plain", trained_model, tokenizer, documents, counts)
        marked = score_model("marked", marker_model, marker_tokenizer, documents, counts)
        for domain in documents:
            a, b = plain.domains[domain], marked.domains[domain]
            # Twice the tokens, each text token as hard as before and every marker free: the raw per-token loss
            # roughly halves, the normalised loss does not move.
            assert b.tokens == 2 * a.tokens + a.documents
            assert b.loss < 0.6 * a.loss
            assert b.normalized_loss == pytest.approx(a.normalized_loss, rel=1e-5)
            assert b.ppl == pytest.approx(a.ppl, rel=1e-5)
        assert marked.average_ppl == pytest.approx(plain.average_ppl, rel=1e-5)


def test_own_tokenizer_as_reference_gives_the_plain_loss(trained_model, tokenizer, documents):
    counts = reference_token_counts(tokenizer, documents)
    result = score_model("m", trained_model, tokenizer, documents, counts)
    for score in result.domains.values():
        assert score.reference_tokens == score.tokens
        assert score.normalized_loss == pytest.approx(score.loss)
        assert score.ppl == pytest.approx(math.exp(score.loss))
    # Average: all documents as one collection, not the mean of the domain perplexities
    pooled = sum(s.nll for s in result.domains.values()) / sum(s.tokens for s in result.domains.values())
    assert result.average_loss == pytest.approx(pooled)
    assert result.average_ppl != pytest.approx(sum(s.ppl for s in result.domains.values()) / len(result.domains))
    # The model has learnt the corpus: far better than uniform over its 512 tokens, and domains differ
    assert all(s.loss < math.log(512) - 1 for s in result.domains.values())
    assert max(s.loss for s in result.domains.values()) - min(s.loss for s in result.domains.values()) > 0.3


def test_report_table_and_json(trained_model, tokenizer, documents, tmp_path):
    counts = reference_token_counts(tokenizer, documents)
    report = DomainPerplexityReport("tok", MAX_CHARS, {d: {"reference_tokens": counts[d]} for d in documents})
    report.models.append(score_model("tiny", trained_model, tokenizer, documents, counts))
    table = report.to_markdown().splitlines()
    assert table[0] == "| model | code_python | en_kjv | en_pydoc | en_shakespeare | zh_poetry | Average |"
    assert table[2].startswith("| tiny | ") and table[2].count("|") == 8
    data = json.loads(report.write_json(tmp_path / "out.json").read_text())
    assert data["models"]["tiny"]["average_ppl"] == pytest.approx(report.models[0].average_ppl)
    assert set(data["models"]["tiny"]["domains"]["en_kjv"]) >= {"loss", "normalized_loss", "ppl", "tokens",
                                                                "reference_tokens"}


def test_default_max_chars_is_a_third_of_the_smallest_context():
    configs = [SimpleNamespace(max_position_embeddings=4096), SimpleNamespace(max_position_embeddings=2048)]
    assert default_max_chars(*configs) == 682
    assert default_max_chars(SimpleNamespace(max_position_embeddings=4096)) == 1365  # Skywork's setting
