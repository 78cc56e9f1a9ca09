"""Sliding-window perplexity against a direct computation of every token's loss with its window's context."""

import pytest
import torch
import torch.nn.functional as F

from hf_smallllm.eval.losses import document_losses
from hf_smallllm.eval.sliding_window import sliding_window_perplexity, window_plan

from .helpers import CORPUS, single_thread


@pytest.fixture(scope="module")
def long_text():
    return (CORPUS / "validation" / "en_shakespeare.txt").read_text(encoding="utf-8")[:1500]


def direct_nll(model, ids: list[int], window: int, stride: int) -> float:
    """Each scored token's loss from an unbatched, unpadded forward pass over exactly its window's tokens (the model
    is causal, so a target's logits depend only on the tokens before it in the window)."""
    total = 0.0
    with torch.no_grad(), single_thread():
        for begin, end, first in window_plan(len(ids), window, stride):
            logits = model(input_ids=torch.tensor([ids[begin:end]])).logits[0].float()
            targets = torch.tensor(ids[first:end])
            total += F.cross_entropy(logits[first - begin - 1 : end - begin - 1], targets, reduction="sum").item()
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
    # Context helps a trained model: windows of the length it was trained on (128) beat nearly context-free ones.
    trained_length = sliding_window_perplexity(trained_model, tokenizer, text, window=128, stride=64, batch_size=4)
    cheap = sliding_window_perplexity(trained_model, tokenizer, text, window=8, stride=7, batch_size=16)
    assert trained_length.tokens == cheap.tokens == result.tokens
    assert cheap.loss > trained_length.loss + 0.05
    assert result.ppl == pytest.approx(torch.tensor(result.loss).exp().item())


def test_bad_settings_are_errors(trained_model, tokenizer):
    with pytest.raises(ValueError, match="stride must be between 1 and window - 1"):
        sliding_window_perplexity(trained_model, input_ids=[5, 6, 7], window=4, stride=4)
    with pytest.raises(ValueError, match="exactly one"):
        sliding_window_perplexity(trained_model, tokenizer)
