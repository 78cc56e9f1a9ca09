"""Chunked causal-LM cross-entropy: the training loss without ever holding the [tokens, vocab] logits whole.

At long lengths the output head dominates activation memory: 64K tokens x 32K vocabulary is 8 GiB of fp32 logits,
plus as much again for their gradient, while the hidden states it comes from are [tokens, hidden]. Here the
flattened hidden states are cut into chunks of `chunk_size` tokens; each chunk's logits are computed, reduced to a
summed cross-entropy and dropped, and recomputed in the backward pass (activation checkpointing per chunk). Peak
extra memory is one chunk's logits and their gradient, whatever the sequence length.

The result equals transformers' `ForCausalLMLoss` (same shift, same `ignore_index`, same `num_items_in_batch`
normalisation, logits upcast to fp32 after the head and the output multiplier, as `SmallLLMForCausalLM` does);
only the summation order differs, so values agree to float rounding. Tokens whose label is ignored are dropped
before the head, so they cost nothing.

`SmallLLMForCausalLM` uses it when `config.loss_chunk_size` is set and labels are given; the forward then returns
`logits=None` (returning them would defeat the purpose). This file ships to the Hub as remote code: torch only.
"""

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _chunk_cross_entropy_sum(
    hidden_states: torch.Tensor, labels: torch.Tensor, head: Callable, logits_multiplier: float, ignore_index: int
) -> torch.Tensor:
    logits = head(hidden_states)
    if logits_multiplier != 1.0:
        logits = logits * logits_multiplier  # in the head's dtype, like the unchunked forward
    return nn.functional.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum")


def chunked_causal_lm_loss(
    hidden_states: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
    chunk_size: int,
    logits_multiplier: float = 1.0,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    shift_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean (or sum / `num_items_in_batch`) next-token cross-entropy of `head(hidden_states)` against `labels`.

    hidden_states: [batch, seq, hidden] (the final-norm output); head: the output projection, called on
    [chunk, hidden] slices (pass the `lm_head` module itself so that wrappers such as FSDP see the call);
    labels: [batch, seq], shifted here like transformers does, unless `shift_labels` (already shifted) is given.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be a positive number of tokens")
    if shift_labels is None:
        shift_labels = nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    shift_labels = shift_labels.reshape(-1).to(hidden_states.device)
    hidden_states = hidden_states.reshape(-1, hidden_states.shape[-1])
    if shift_labels.shape[0] != hidden_states.shape[0]:
        raise ValueError(f"labels cover {shift_labels.shape[0]} tokens but the hidden states {hidden_states.shape[0]}")

    keep = shift_labels != ignore_index
    kept = torch.nonzero(keep).flatten()
    hidden_states, shift_labels = hidden_states.index_select(0, kept), shift_labels.index_select(0, kept)

    total = hidden_states.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden_states.shape[0], chunk_size):
        chunk, chunk_labels = hidden_states[start:start + chunk_size], shift_labels[start:start + chunk_size]
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_cross_entropy_sum, chunk, chunk_labels, head, logits_multiplier,
                                       ignore_index, use_reentrant=False)
        else:
            total = total + _chunk_cross_entropy_sum(chunk, chunk_labels, head, logits_multiplier, ignore_index)

    if num_items_in_batch is None:
        return total / kept.numel()  # 0 / 0 = nan for a batch without labels, like cross_entropy's mean
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


__all__ = ["chunked_causal_lm_loss"]
