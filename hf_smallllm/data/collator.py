"""Batching packed rows for the model: a collator for `transformers.Trainer` (and any DataLoader).

Packed rows need no attention mask: the model derives the block-diagonal mask from `position_ids` (sdpa, eager,
flex) or takes `cu_seq_lens_q/k` and `max_length_q/k` for flash-attn's varlen kernel, which the collator adds when
asked. Rows of unequal length (e.g. SFT samples) are right-padded with label -100, and the padding is made a
segment of its own (its positions restart at 0): real tokens never attend to it and it needs no attention mask,
which also keeps the packed-document masking of the real tokens intact.
"""

from dataclasses import dataclass

import torch

from ..models.modeling_smallllm import flash_varlen_kwargs_from_position_ids
from .packing import IGNORE_INDEX, PackedRow


@dataclass
class PackedCollator:
    pad_token_id: int = 0
    flash_attn_kwargs: bool = False  # add cu_seq_lens_q/k and max_length_q/k (flash-attn varlen)

    def __call__(self, rows) -> dict[str, torch.Tensor]:
        rows = [row if isinstance(row, dict) else row.__dict__ for row in rows]
        if not rows:
            raise ValueError("cannot collate an empty batch")
        length = max(len(row["input_ids"]) for row in rows)
        batch = {"input_ids": [], "labels": [], "position_ids": []}
        for row in rows:
            pad = length - len(row["input_ids"])
            batch["input_ids"].append(list(row["input_ids"]) + [self.pad_token_id] * pad)
            labels = row.get("labels", row["input_ids"])
            batch["labels"].append(list(labels) + [IGNORE_INDEX] * pad)
            positions = row.get("position_ids") or list(range(len(row["input_ids"])))
            batch["position_ids"].append(list(positions) + list(range(pad)))
        tensors = {key: torch.tensor(values, dtype=torch.long) for key, values in batch.items()}
        if self.flash_attn_kwargs:
            tensors.update(flash_varlen_kwargs_from_position_ids(tensors["position_ids"]))
        return tensors


def rows_to_batch(rows: list[PackedRow], pad_token_id: int = 0, flash_attn_kwargs: bool = False) -> dict:
    return PackedCollator(pad_token_id, flash_attn_kwargs)(rows)


__all__ = ["PackedCollator", "rows_to_batch"]
