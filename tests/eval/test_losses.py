"""Per-document token losses: the number every evaluation is built from."""

import math

import pytest
import torch

from hf_smallllm.eval.losses import document_losses, encode_documents, pooled_loss

TEXTS = [
    "So shaken as we are, so wan with care,\nFind we a time for frighted peace to pant,",
    "Num16:1 Now Korah, the son of Izhar, the son of Kohath, the son of Levi",
    "子曰：“雍也可使南面。”",
    "def wait(self):\n    pid = os.fork()\n",
    "x",
]


def test_document_loss_matches_the_models_own_loss(trained_model, tokenizer):
    losses = document_losses(trained_model, tokenizer, TEXTS[:1])
    ids = torch.tensor([encode_documents(tokenizer, TEXTS[:1])[0]])
    with torch.no_grad():
        expected = trained_model(input_ids=ids, labels=ids).loss.item()
    assert losses[0].predicted_tokens == ids.shape[1] - 1
    assert losses[0].loss == pytest.approx(expected, rel=1e-5)


def test_batching_and_padding_do_not_change_losses(trained_model, tokenizer):
    one = document_losses(trained_model, tokenizer, TEXTS, batch_size=1)
    many = document_losses(trained_model, tokenizer, TEXTS, batch_size=4)
    for a, b in zip(one, many, strict=True):
        assert a.predicted_tokens == b.predicted_tokens
        assert a.nll == pytest.approx(b.nll, rel=1e-4, abs=1e-4)
    # "x" is a single token: nothing to predict
    assert one[-1].predicted_tokens == 0 and math.isnan(one[-1].loss)
    assert pooled_loss(one) == pytest.approx(sum(d.nll for d in one) / sum(d.predicted_tokens for d in one))


def test_no_bos_by_default_and_bos_scores_the_first_token(trained_model, tokenizer):
    plain = document_losses(trained_model, tokenizer, TEXTS[:1])[0]
    with_bos = document_losses(trained_model, tokenizer, TEXTS[:1], add_bos=True)[0]
    assert with_bos.tokens == plain.tokens + 1
    assert with_bos.predicted_tokens == plain.predicted_tokens + 1


def test_documents_longer_than_the_context_are_an_error_or_cut(trained_model, tokenizer):
    text = TEXTS[0] * 4
    with pytest.raises(ValueError, match="exceed the model's 16 tokens"):
        document_losses(trained_model, tokenizer, [text], max_tokens=16)
    cut = document_losses(trained_model, tokenizer, [text], max_tokens=16, overflow="truncate")[0]
    assert cut.tokens == 16 and cut.predicted_tokens == 15
