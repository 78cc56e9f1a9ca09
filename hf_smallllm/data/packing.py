"""Rows for the model from a window of a source's token stream: labels and positions, vectorised over a batch.

A source's token stream is its documents, tokenized without special tokens, each ending with EOS (optionally
beginning with BOS), concatenated in order and repeated epoch after epoch. A row is `seq_len` consecutive tokens of
that stream; `pack_rows` turns a `(rows, seq_len)` array of them into what the model takes:

- `document` packing (ChuXin / StableLM 2): positions restart at 0 at the first token of the row and after every
  EOS, so the model's packed-sequence handling restricts attention to the document (a block-diagonal causal mask;
  flash-attn's varlen path). The first token of each segment gets label -100: nothing is predicted across a
  document boundary, so the loss of a row equals the summed losses of its documents run on their own. A document
  that does not fit continues in the next row as a fresh segment.
- `causal` packing (TinyLlama): positions run 0..seq_len-1 over the whole row and every token but the row's first
  is a target, so attention and prediction cross document boundaries.

No token is dropped or duplicated. Everything is numpy over whole arrays (no per-token Python work).
`PackedRow` is the list-of-ints row SFT builds and `PackedCollator` pads.
"""

from dataclasses import dataclass

import numpy as np

PACKING_MODES = ("document", "causal")
IGNORE_INDEX = -100


@dataclass
class PackedRow:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    source: str = ""
    padding: int = 0  # pad tokens at the end


_COUNTING: dict = {}


def _counting(rows: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """0, 1, ..., rows x seq_len - 1 (flat) and 0..seq_len-1 per row, made once per batch shape."""
    key = (rows, seq_len)
    if key not in _COUNTING:
        if len(_COUNTING) > 16:
            _COUNTING.clear()
        flat = np.arange(rows * seq_len, dtype=np.int64)
        _COUNTING[key] = (flat, np.ascontiguousarray(np.broadcast_to(flat[:seq_len], (rows, seq_len))))
    return _COUNTING[key]


def pack_rows(ids: np.ndarray, mode: str, eos_token_id: int) -> dict[str, np.ndarray]:
    """`input_ids`, `labels` and `position_ids` (int64, shape of `ids`) for rows of consecutive stream tokens."""
    if mode not in PACKING_MODES:
        raise ValueError(f"packing mode {mode!r}; choose one of {PACKING_MODES}")
    if ids.ndim != 2 or ids.shape[1] < 2:
        raise ValueError(f"rows must be a (rows, seq_len >= 2) array, got shape {ids.shape}")
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    rows, seq_len = ids.shape
    labels = ids.copy()
    counting = _counting(rows, seq_len)
    if mode == "document":
        # Segment starts (row starts and tokens after an EOS) are few: a token's position is its index minus the
        # index of its segment's start, repeated over the segment (memory-bound passes, no running sums).
        flat = ids.reshape(-1)
        starts = np.empty(flat.shape, dtype=bool)
        starts[0] = True
        np.equal(flat[:-1], eos_token_id, out=starts[1:])
        starts[::seq_len] = True
        first = np.flatnonzero(starts)
        lengths = np.empty_like(first)
        np.subtract(first[1:], first[:-1], out=lengths[:-1])
        lengths[-1] = flat.size - first[-1]
        positions = np.subtract(counting[0], np.repeat(first, lengths)).reshape(rows, seq_len)
        labels.reshape(-1)[first] = IGNORE_INDEX
    else:
        positions = counting[1].copy()
        labels[:, 0] = IGNORE_INDEX  # a row's first token is never a target; saying so keeps token counts exact
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


__all__ = ["IGNORE_INDEX", "PACKING_MODES", "PackedRow", "pack_rows"]
