"""Long-context evaluation: passkey / needle-in-a-haystack retrieval and loss-by-position curves.

The modeling side of long context lives in the model core (RoPE scaling through transformers' rope utilities,
ALiBi interpolation via `alibi_scaling`, chunked cross-entropy via `loss_chunk_size`); the training side is the
pretraining pipeline with a sequence-length schedule (recipes `training/recipes/*long*.yaml`). See
docs/long_context.md.
"""

from .passkey import PasskeyReport, PasskeySample, make_passkey_samples, plot_passkey_grid, score_passkey
from .position_loss import PositionLoss, corpus_token_rows, loss_by_position, plot_loss_by_position, token_losses

__all__ = [
    "PasskeyReport",
    "PasskeySample",
    "PositionLoss",
    "corpus_token_rows",
    "loss_by_position",
    "make_passkey_samples",
    "plot_loss_by_position",
    "plot_passkey_grid",
    "score_passkey",
    "token_losses",
]
