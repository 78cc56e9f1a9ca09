"""Per-document token losses of a causal language model: the one place that runs a model over text for evaluation.

Every evaluation in this package (domain perplexity, per-domain validation during training, the contamination
check) reduces to the same numbers per document: the summed cross-entropy (nats) of every token but the first,
the number of such predicted tokens, the document's token count and its character count. The first token has no
context (no BOS is added unless asked for), so it is never scored, as in Skywork's `eval/eval_loss.py`
(GH:SkyworkAI/Skywork): `num_tokens = attention_mask.sum() - batch_size`.

Documents are tokenized once, sorted by length and batched with right padding, so a batch wastes little compute on
padding; the loss is taken in float32 from logits of any dtype. `model` is anything that takes
`input_ids`/`attention_mask` and returns an object with `.logits` (a transformers causal LM, a PEFT model, a
wrapper).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

OVERFLOW_POLICIES = ("error", "truncate")


@dataclass(frozen=True)
class DocumentLoss:
    """Loss of one document; `nll` is the summed cross-entropy in nats over `predicted_tokens` tokens."""

    nll: float
    predicted_tokens: int  # tokens scored: every token but the first
    tokens: int  # tokens the document was encoded into (after an optional BOS)
    chars: int

    @property
    def loss(self) -> float:
        """Mean nats per predicted token (nan for a document with fewer than two tokens)."""
        return self.nll / self.predicted_tokens if self.predicted_tokens else math.nan


def pooled_loss(losses: Sequence[DocumentLoss]) -> float:
    """Token-weighted mean loss over documents: total nats / total predicted tokens (Skywork's per-domain loss)."""
    tokens = sum(d.predicted_tokens for d in losses)
    if tokens == 0:
        raise ValueError("no document has two or more tokens, so there is nothing to score")
    return sum(d.nll for d in losses) / tokens


def encode_documents(tokenizer, texts: Sequence[str], add_bos: bool = False) -> list[list[int]]:
    """Token ids of each text without the tokenizer's automatic special tokens (`add_special_tokens=False`), with
    the BOS id prepended when `add_bos`."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    ids = [list(map(int, row)) for row in encoded]
    if add_bos:
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is None:
            raise ValueError("add_bos=True but the tokenizer has no bos_token_id")
        ids = [[bos] + row for row in ids]
    return ids


def model_device(model) -> torch.device:
    """Where the model's inputs go: the device of its first parameter (CPU for a parameterless wrapper)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def token_nll(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (nats, float32) of each token given the ones before it: shape [batch, seq - 1], zero where the
    predicted token is padding. `input_ids` and `attention_mask` are [batch, seq], right-padded."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    # [batch, seq - 1, vocab]: position t predicts token t + 1
    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:]
    nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    # where(), not a product: a padding position may have an infinite loss, and inf * 0 is nan.
    return torch.where(attention_mask[:, 1:].bool(), nll, torch.zeros_like(nll))


def ids_losses(
    model,
    ids: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "scoring",
    chars: Sequence[int] | None = None,
) -> list[DocumentLoss]:
    """`DocumentLoss` of each token sequence, in input order. Sequences are batched longest first; the caller makes
    sure each fits the model's context."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chars = list(chars) if chars is not None else [0] * len(ids)
    results: list[DocumentLoss | None] = [None] * len(ids)
    # Sequences of 0 or 1 tokens have nothing to predict and need no forward pass.
    scorable = [i for i, row in enumerate(ids) if len(row) >= 2]
    for i, row in enumerate(ids):
        if len(row) < 2:
            results[i] = DocumentLoss(0.0, 0, len(row), chars[i])
    order = sorted(scorable, key=lambda i: len(ids[i]), reverse=True)
    device = model_device(model)
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            batches = range(0, len(order), batch_size)
            for start in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
                members = order[start : start + batch_size]
                longest = len(ids[members[0]])
                input_ids = torch.zeros(len(members), longest, dtype=torch.long)
                attention_mask = torch.zeros(len(members), longest, dtype=torch.long)
                for row, i in enumerate(members):
                    input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                    attention_mask[row, : len(ids[i])] = 1
                nll = token_nll(model, input_ids.to(device), attention_mask.to(device))
                sums = nll.double().sum(dim=1).tolist()
                for row, i in enumerate(members):
                    results[i] = DocumentLoss(sums[row], len(ids[i]) - 1, len(ids[i]), chars[i])
    finally:
        if was_training:
            model.train()
    return results


def document_losses(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 8,
    max_tokens: int | None = None,
    overflow: str = "error",
    add_bos: bool = False,
    progress: bool = False,
    desc: str = "scoring",
) -> list[DocumentLoss]:
    """`DocumentLoss` of each text under `model`, in input order.

    max_tokens: the longest sequence the model may see (default: `model.config.max_position_embeddings` when the
        model has one). A longer document raises ValueError (`overflow="error"`, for comparisons where every model
        must see the same text) or is cut to `max_tokens` tokens (`overflow="truncate"`).
    add_bos: prepend BOS, so the document's first text token is scored too.
    """
    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"overflow={overflow!r}; choose one of {OVERFLOW_POLICIES}")
    ids = encode_documents(tokenizer, texts, add_bos=add_bos)
    if max_tokens is None:
        max_tokens = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if max_tokens is not None:
        too_long = [i for i, row in enumerate(ids) if len(row) > max_tokens]
        if too_long and overflow == "error":
            i = too_long[0]
            raise ValueError(
                f"{len(too_long)} document(s) exceed the model's {max_tokens} tokens (document {i}: {len(texts[i])} "
                f"characters -> {len(ids[i])} tokens); use fewer characters per document or overflow='truncate'"
            )
        ids = [row[:max_tokens] for row in ids]
    return ids_losses(model, ids, batch_size=batch_size, progress=progress, desc=desc,
                      chars=[len(t) for t in texts])


__all__ = [
    "DocumentLoss",
    "OVERFLOW_POLICIES",
    "document_losses",
    "encode_documents",
    "ids_losses",
    "model_device",
    "pooled_loss",
    "token_nll",
]
