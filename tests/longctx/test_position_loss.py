"""Loss by position equals the per-token cross-entropy of the full logits, bucketed; the plot is a PNG."""

import pytest
import torch
import torch.nn.functional as F

from hf_smallllm.longctx import PositionLoss, corpus_token_rows, loss_by_position, plot_loss_by_position, token_losses
from tests.models.helpers import random_ids, tiny_model


@pytest.mark.parametrize("family", ["btlm", "geb"])  # btlm: muP logit multiplier
def test_token_losses_match_full_logits(family):
    model = tiny_model(family, "sdpa")
    ids = random_ids(model.config.vocab_size, (2, 50))
    with torch.no_grad():
        logits = model(ids).logits[:, :-1]
    expected = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    torch.testing.assert_close(token_losses(model, ids, head_chunk=7), expected, atol=1e-5, rtol=1e-5)

    curve = loss_by_position(model, ids, bucket_size=16, progress=False)
    assert curve.positions == [16, 32, 48, 64] and curve.rows == 2
    torch.testing.assert_close(torch.tensor(curve.loss[0]), expected[:, :16].mean())
    torch.testing.assert_close(torch.tensor(curve.loss[-1]), expected[:, 48:].mean())
    assert curve.mean_between(0, 32) == pytest.approx((curve.loss[0] + curve.loss[1]) / 2)
    assert not model.training


def test_corpus_rows_are_contiguous_text(corpus_tokenizer):
    rows = corpus_token_rows(corpus_tokenizer, 256, 3)
    assert rows.shape == (3, 256)
    assert "LORD" in corpus_tokenizer.decode(rows[0]) or "God" in corpus_tokenizer.decode(rows[0])
    with pytest.raises(ValueError, match="need"):
        corpus_token_rows(corpus_tokenizer, 1_000_000, 10)


def test_plot(tmp_path):
    curves = {"a": PositionLoss(8, [3.0, 2.5, 2.4], 1), "b": PositionLoss(8, [3.0, 2.6, 2.9], 1)}
    path = plot_loss_by_position(curves, tmp_path / "sub" / "curve.png", train_length=16)
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["curve.png"]  # no temporary left behind
    with pytest.raises(ValueError):
        plot_loss_by_position({}, tmp_path / "x.png")
