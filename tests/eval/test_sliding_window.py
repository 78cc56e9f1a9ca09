"""Sliding-window perplexity against a direct computation of every token's loss with its window's context."""

import pytest
import torch
import torch.nn.functional as F

from hf_smallllm.eval.losses import document_losses
from hf_smallllm.eval.sliding_window import sliding_window_perplexity, window_plan

from .helpers import CORPUS


@pytest.fixture(scope="module")
def long_text():
    return (CORPUS / "validation" / "en_shakespeare.txt").read_text(encoding="utf-8")[:1500]


def direct_nll(model, ids: list[int], window: int, stride: int) -> float:
    """Each token's loss from its own forward pass over exactly the context the plan gives it."""
    total = 0.0
    with torch.no_grad():
        for begin, end, first in window_plan(len(ids), window, stride):
            for target in range(first, end):
                logits = model(input_ids=torch.tensor([ids[begin:target]])).logits[0, -1]
                total += F.cross_entropy(logits.float()[None], torch.tensor([ids[target]])).item()
    return total


@pytest.mark.parametrize("window,stride", [(64, 32), (48, 47), (40, 7)], ids=["half", "one-token-overlap", "small"])
def test_matches_direct_per_token_computation(trained_model, tokenizer, long_text, window, stride):
    ids = tokenizer(long_text[:400], add_special_tokens=False)["input_ids"]
    result = sliding_window_perplexity(trained_model, input_ids=ids, window=window, stride=stride, batch_size=3)
    assert result.tokens == len(ids) - 1
    assert result.nll == pytest.approx(direct_nll(trained_model, ids, window, stride), rel=1e-4)


def test_window_covering_the_text_is_the_plain_document_loss(trained_model, tokenizer, long_text):
    text = long_text[:600]  # stays inside the 512-token context
    whole = document_losses(trained_model, tokenizer, [text], max_tokens=None)[0]
    result = sliding_window_perplexity(trained_model, tokenizer, text, window=whole.tokens + 5)
    assert result.windows == 1
    assert result.nll == pytest.approx(whole.nll, rel=1e-5)
    assert result.tokens == whole.predicted_tokens


def test_longer_than_the_context(trained_model, tokenizer):
    text = (CORPUS / "validation" / "en_kjv.txt").read_text(encoding="utf-8")[:6000]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > trained_model.config.max_position_embeddings
    result = sliding_window_perplexity(trained_model, tokenizer, text, stride=384, batch_size=2)
    assert result.window == 512 and result.tokens == len(ids) - 1 and result.windows > 2
    # More context can only help a trained model on average: disjoint-ish windows score worse.
    cheap = sliding_window_perplexity(trained_model, tokenizer, text, window=64, stride=63)
    assert cheap.loss > result.loss
    assert result.ppl == pytest.approx(torch.tensor(result.loss).exp().item())


def test_bad_settings_are_errors(trained_model, tokenizer):
    with pytest.raises(ValueError, match="stride must be between 1 and window - 1"):
        sliding_window_perplexity(trained_model, input_ids=[5, 6, 7], window=4, stride=4)
    with pytest.raises(ValueError, match="exactly one"):
        sliding_window_perplexity(trained_model, tokenizer)
