"""Perplexity of a text longer than the model's context, by a sliding window.

The first window feeds the first `window` tokens and scores all but the first; each following window moves `stride`
tokens on, feeds the `window` tokens ending there and scores only its last `stride` tokens, conditioned on everything
before them in the window. Every token is scored exactly once, each after the first window with at least
`window - stride` tokens of context (the transformers "perplexity of fixed-length models" recipe, with every window
full length). `stride = window - 1` is the cheapest setting (lm-eval's `loglikelihood_rolling` windows overlap by one
token like this); a smaller stride costs about `window / stride` times more compute for a better estimate. As elsewhere
in this package the text's first token has no context and is not scored unless `add_bos`.
"""

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import UsageFileNotFoundError
from .losses import encode_documents, model_device, token_nll


@dataclass(frozen=True)
class SlidingWindowResult:
    nll: float  # total nats over the scored tokens
    tokens: int  # tokens scored (every token but the first, or every text token with add_bos)
    windows: int
    window: int
    stride: int

    @property
    def loss(self) -> float:
        return self.nll / self.tokens if self.tokens else math.nan

    @property
    def ppl(self) -> float:
        return math.exp(self.loss)


def window_plan(length: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first_scored) of each window over `length` tokens: the window feeds tokens [begin, end) and
    scores tokens [first_scored, end). Every token but token 0 (no context) is scored exactly once; each window after
    the first is `window` tokens long and scores its last `stride` (or fewer, at the end of the text)."""
    if window < 2:
        raise ValueError(f"window must be >= 2 tokens, got {window}")
    if not 1 <= stride < window:
        raise ValueError(f"stride must be between 1 and window - 1 ({window - 1}), got {stride}: a window must keep "
                         "at least one token of context before the tokens it scores")
    if length < 2:
        return []
    end = min(window, length)
    plan = [(0, end, 1)]
    while end < length:
        next_end = min(end + stride, length)
        plan.append((next_end - window, next_end, end))
        end = next_end
    return plan


def sliding_window_perplexity(
    model,
    tokenizer=None,
    text: str | None = None,
    *,
    input_ids: Sequence[int] | torch.Tensor | None = None,
    window: int | None = None,
    stride: int | None = None,
    add_bos: bool = False,
    batch_size: int = 1,
    progress: bool = False,
) -> SlidingWindowResult:
    """Loss and perplexity of `text` (encoded with `tokenizer`, no special tokens) or of `input_ids`.

    window: tokens per forward pass (default: the model's `max_position_embeddings`).
    stride: new tokens scored per window, 1 to window - 1 (default: half the window).
    """
    if (text is None) == (input_ids is None):
        raise ValueError("give exactly one of text (with a tokenizer) or input_ids")
    if text is not None:
        if tokenizer is None:
            raise ValueError("text needs a tokenizer")
        ids = encode_documents(tokenizer, [text], add_bos=add_bos)[0]
    else:
        ids = input_ids.tolist() if isinstance(input_ids, torch.Tensor) else list(input_ids)
        if isinstance(input_ids, torch.Tensor) and input_ids.dim() != 1:
            raise ValueError(f"input_ids must be one sequence (1-D), got shape {tuple(input_ids.shape)}")
    if window is None:
        window = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if window is None:
            raise ValueError("the model config has no max_position_embeddings; give window")
    stride = stride if stride is not None else max(window // 2, 1)
    plan = window_plan(len(ids), window, stride)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    device = model_device(model)
    tokens = torch.tensor(ids, dtype=torch.long)
    total, scored = 0.0, 0
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(plan), batch_size), desc="windows", disable=not progress, unit="batch"):
                group = plan[start : start + batch_size]
                longest = max(end - begin for begin, end, _ in group)
                input_batch = torch.zeros(len(group), longest, dtype=torch.long)
                mask = torch.zeros(len(group), longest, dtype=torch.long)
                for row, (begin, end, _) in enumerate(group):
                    input_batch[row, : end - begin] = tokens[begin:end]
                    mask[row, : end - begin] = 1
                nll = token_nll(model, input_batch.to(device), mask.to(device)).double()
                for row, (begin, end, first) in enumerate(group):
                    # nll[:, j] is the loss of token begin + j + 1
                    total += nll[row, first - begin - 1 : end - begin - 1].sum().item()
                    scored += end - first
    finally:
        if was_training:
            model.train()
    return SlidingWindowResult(total, scored, len(plan), window, stride)


def sliding_window_files(model, tokenizer, paths: Sequence[str | os.PathLike],
                         **options) -> dict[str, SlidingWindowResult]:
    """{path: result} of `sliding_window_perplexity` over each UTF-8 text file's whole text (`options` as there)."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():
            raise UsageFileNotFoundError(f"no such file {str(path)!r}")
    return {str(path): sliding_window_perplexity(model, tokenizer, path.read_text(encoding="utf-8"), **options)
            for path in paths}


def sliding_window_markdown(results: Mapping[str, SlidingWindowResult]) -> str:
    """A Markdown table with one row per file: tokens scored, windows, loss and perplexity."""
    rows = ["| file | tokens | windows | loss | ppl |", "|---|---|---|---|---|"]
    rows += [f"| {name} | {r.tokens} | {r.windows} | {r.loss:.4f} | {r.ppl:.2f} |" for name, r in results.items()]
    return "\n".join(rows)


def sliding_window_json(results: Mapping[str, SlidingWindowResult]) -> dict:
    return {name: {"loss": r.loss, "ppl": r.ppl, "tokens": r.tokens, "windows": r.windows, "window": r.window,
                   "stride": r.stride} for name, r in results.items()}


__all__ = ["SlidingWindowResult", "sliding_window_files", "sliding_window_json", "sliding_window_markdown",
           "sliding_window_perplexity", "window_plan"]
