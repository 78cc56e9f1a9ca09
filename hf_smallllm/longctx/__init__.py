"""Long-context evaluation: passkey retrieval, needle in a haystack and loss-by-position curves.

The modeling side of long context lives in the model core (RoPE scaling through transformers' rope utilities,
ALiBi interpolation via `alibi_scaling`, chunked cross-entropy via `loss_chunk_size`); the training side is the
pretraining pipeline with a sequence-length schedule (recipes `training/recipes/*long*.yaml`). See
docs/long_context.md.
"""

from .needle import NeedleReport, make_needle_samples, plot_needle_grid, score_needle
from .passkey import PasskeyReport, PasskeySample, make_passkey_samples, plot_passkey_grid, score_passkey
from .position_loss import PositionLoss, corpus_token_rows, loss_by_position, plot_loss_by_position, token_losses

__all__ = [
    "NeedleReport",
    "PasskeyReport",
    "PasskeySample",
    "PositionLoss",
    "corpus_token_rows",
    "loss_by_position",
    "make_needle_samples",
    "make_passkey_samples",
    "plot_loss_by_position",
    "plot_needle_grid",
    "plot_passkey_grid",
    "score_needle",
    "score_passkey",
    "token_losses",
]
