"""Loss by position: how well a model predicts token t of a long text as t grows, averaged over rows and over
buckets of positions, and the PNG that compares models or settings (the usual picture for length extrapolation:
flat past the training length when the model extrapolates, rising when it does not).

Rows are contiguous windows of real text (the bundled corpus, documents joined with EOS), so every position has
genuine long-range context. The output head is applied in chunks of positions, so a 64K-token row never holds its
[tokens, vocab] logits whole.
"""

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..resources import corpus_path


@dataclass
class PositionLoss:
    """Mean next-token loss per bucket of positions: bucket i covers predicted positions
    [i * bucket_size + 1, (i + 1) * bucket_size] (position 0 is never predicted)."""

    bucket_size: int
    loss: list[float]
    rows: int

    @property
    def positions(self) -> list[int]:
        """The last predicted position of each bucket (the x axis of the plot)."""
        return [(i + 1) * self.bucket_size for i in range(len(self.loss))]

    def mean_between(self, start: int, end: int) -> float:
        """Mean loss of the buckets whose positions lie in [start, end)."""
        values = [v for i, v in enumerate(self.loss)
                  if start <= i * self.bucket_size and (i + 1) * self.bucket_size <= end]
        if not values:
            raise ValueError(f"no whole bucket of {self.bucket_size} positions in [{start}, {end})")
        return sum(values) / len(values)

    def to_dict(self) -> dict:
        return {"bucket_size": self.bucket_size, "rows": self.rows, "positions": self.positions, "loss": self.loss}


def corpus_token_rows(tokenizer, length: int, rows: int, corpus: Sequence[str] = ("en_kjv.txt", "en_shakespeare.txt"),
                      validation: bool = True) -> torch.Tensor:
    """[rows, length] windows of contiguous bundled text (held-out validation files by default), taken back to back
    from the concatenation of `corpus`; ValueError when the text is too short for rows x length tokens."""
    ids: list[int] = []
    needed = rows * length
    for name in corpus:
        if len(ids) >= needed:
            break
        text = corpus_path(f"validation/{name}" if validation else name).read_text(encoding="utf-8")
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
    if len(ids) < needed:
        raise ValueError(f"the corpus {list(corpus)} has {len(ids)} tokens; {rows} rows of {length} need {needed}")
    return torch.tensor(ids[:needed]).view(rows, length)


@torch.no_grad()
def token_losses(model, input_ids: torch.Tensor, head_chunk: int = 4096) -> torch.Tensor:
    """Cross-entropy (nats, fp32) of tokens 1..L-1 of each row given the tokens before: [rows, L - 1]. Runs the
    decoder once per row and the output head over `head_chunk` positions at a time."""
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    multiplier = getattr(model.config, "output_logits_multiplier", 1.0)  # muP models scale their logits
    device = head.weight.device
    losses = []
    for row in input_ids:
        row = row.to(device)[None]
        hidden = decoder(input_ids=row, use_cache=False).last_hidden_state[0, :-1]
        targets = row[0, 1:]
        pieces = []
        for start in range(0, hidden.shape[0], head_chunk):
            logits = head(hidden[start:start + head_chunk]) * multiplier
            pieces.append(F.cross_entropy(logits.float(), targets[start:start + head_chunk], reduction="none"))
        losses.append(torch.cat(pieces))
    return torch.stack(losses).cpu()


def loss_by_position(model, input_ids: torch.Tensor, bucket_size: int = 64, head_chunk: int = 4096,
                     progress: bool = True) -> PositionLoss:
    """Mean loss per bucket of `bucket_size` positions over the rows of `input_ids` ([rows, length])."""
    if bucket_size < 1:
        raise ValueError(f"bucket_size={bucket_size} must be positive")
    was_training = model.training
    model.eval()
    try:
        per_row = [token_losses(model, row[None], head_chunk)[0]
                   for row in tqdm(input_ids, desc="loss by position", disable=not progress)]
    finally:
        model.train(was_training)
    mean = torch.stack(per_row).mean(0)  # [length - 1]
    buckets = math.ceil(mean.numel() / bucket_size)
    loss = [float(mean[i * bucket_size:(i + 1) * bucket_size].mean()) for i in range(buckets)]
    return PositionLoss(bucket_size=bucket_size, loss=loss, rows=input_ids.shape[0])


def plot_loss_by_position(curves: Mapping[str, PositionLoss], output_path: str | os.PathLike,
                          train_length: int | None = None, title: str | None = None) -> Path:
    """One line per curve (loss against position), a dashed line at the training length; PNG written atomically."""
    from matplotlib.figure import Figure

    from ..runfiles import atomic_path

    if not curves:
        raise ValueError("no loss-by-position curves to plot")
    figure = Figure(figsize=(8, 5))
    axes = figure.add_subplot()
    for label, curve in curves.items():
        axes.plot(curve.positions, curve.loss, label=label)
    if train_length:
        axes.axvline(train_length, color="grey", linestyle="--", label=f"training length {train_length}")
    axes.set_xlabel("position (tokens)")
    axes.set_ylabel("next-token loss (nats)")
    axes.set_title(title or "loss by position")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with atomic_path(output_path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return Path(output_path)


__all__ = ["PositionLoss", "corpus_token_rows", "loss_by_position", "plot_loss_by_position", "token_losses"]
