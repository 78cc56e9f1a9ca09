"""Greedy decoding without `generate()`: a preallocated static KV cache and a loop that does only the step's work.

`generate()` spends milliseconds per token around the forward on bookkeeping a batch-1 greedy decode does not need
(logits processors, stopping criteria, `model_kwargs` updates, a growing `DynamicCache` that concatenates every
layer's keys and values each step, i.e. one allocation and copy per layer per token). `greedy_decode` instead
allocates everything once: a transformers `StaticCache` sized for prompt + new tokens (keys and values written in
place), the token and position inputs (updated in place), and the output row. Each step is one forward of one token,
an argmax and two in-place copies.

`prepare_lean_decoding(model)` also swaps, in place, the small operators every step repeats:

- RMSNorm (8 operators: casts, pow, mean, add, rsqrt, two multiplies) becomes torch's one `rms_norm` operator
  (the same arithmetic in one pass; logits move by float rounding, ~1e-7; bf16 keeps its casts, see
  `FusedRMSNorm`);
- the rotary cos/sin, computed from the positions at every step, are read from a table computed once for every
  position with the same formula (identical values), for the unscaled and linearly scaled RoPE whose frequencies do
  not change with the sequence length.

Greedy tokens equal `generate(do_sample=False)`'s and logits stay within 1e-5 (tests/inference/test_lean_decode.py).
Batch 1, CPU or any device; no sampling (`stream_generate` keeps `generate()` for that).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UsageValueError

# rope types whose frequencies do not depend on the sequence length (their cos/sin can be tabulated once)
_STATIC_ROPE_TYPES = ("default", "linear")


class FusedRMSNorm(nn.Module):
    """`SmallLLMRMSNorm` as torch's single `rms_norm` operator. In float32 that is the whole norm; in bf16 the
    original normalises in float32, rounds to bf16 and then multiplies by the weight, so the fused operator runs on
    the float32 copy without the weight and the multiply stays where it was (4 operators instead of 8)."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.weight = norm.weight
        self.variance_epsilon = norm.variance_epsilon
        self.original = [norm]  # a list: not a child module, so the state dict keeps only `weight`

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        shape = (hidden_states.shape[-1],)
        if hidden_states.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return torch.rms_norm(hidden_states, shape, self.weight, self.variance_epsilon)
        normed = torch.rms_norm(hidden_states.to(torch.float32), shape, None, self.variance_epsilon)
        return self.weight * normed.to(hidden_states.dtype)


class RotaryTable(nn.Module):
    """A rotary embedding's cos/sin for every position up to `length`, computed once by the embedding itself;
    `forward` looks them up by position."""

    def __init__(self, rotary: nn.Module, length: int):
        super().__init__()
        self.rotary = rotary
        self.length = length
        self._tables: dict = {}

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (x.dtype, x.device)
        if key not in self._tables:
            positions = torch.arange(self.length, device=x.device).unsqueeze(0)
            cos, sin = self.rotary(x, positions)
            self._tables[key] = (cos[0], sin[0])
        cos, sin = self._tables[key]
        if int(position_ids.max()) >= self.length:  # past the table: compute as before
            return self.rotary(x, position_ids)
        return cos[position_ids], sin[position_ids]


def prepare_lean_decoding(model: nn.Module, max_positions: int | None = None) -> dict:
    """Swap the repeated small operators for their one-pass versions (see the module docstring); returns how many
    modules of each kind were swapped. Idempotent."""
    swapped = {"rms_norm": 0, "rotary_table": 0}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ == "SmallLLMRMSNorm":
                setattr(parent, name, FusedRMSNorm(child))
                swapped["rms_norm"] += 1
            elif type(child).__name__ == "SmallLLMRotaryEmbedding" and child.rope_type in _STATIC_ROPE_TYPES:
                length = max_positions or child.max_seq_len_cached
                setattr(parent, name, RotaryTable(child, length))
                swapped["rotary_table"] += 1
    return swapped


def undo_lean_decoding(model: nn.Module) -> None:
    """Put the original norm and rotary modules back."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FusedRMSNorm):
                setattr(parent, name, child.original[0])
            elif isinstance(child, RotaryTable):
                setattr(parent, name, child.rotary)


@dataclass
class LeanDecodeResult:
    """Tokens after the prompt, and when they came: prefill ends with the first new token."""

    tokens: torch.Tensor  # [new_tokens] int64
    prefill_seconds: float
    decode_seconds: float

    @property
    def decode_tokens_per_second(self) -> float:
        steps = self.tokens.numel() - 1
        return steps / self.decode_seconds if steps > 0 and self.decode_seconds > 0 else 0.0


def greedy_decode(model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int, *,
                  eos_token_id: int | list[int] | None = None, on_token: Callable[[int], None] | None = None,
                  return_logits: bool = False) -> LeanDecodeResult | tuple[LeanDecodeResult, torch.Tensor]:
    """Greedy (argmax) continuation of one prompt `input_ids` ([1, prompt] or [prompt]) for up to `max_new_tokens`
    tokens, stopping after `eos_token_id` (one id or several). `on_token` gets each token id as it is chosen (this
    costs one device-to-host read per token; without it and without `eos_token_id` the loop never reads a token
    back).
    With `return_logits`, also the float32 logits of every step ([new_tokens, vocab]; for tests)."""
    from transformers import StaticCache

    if max_new_tokens < 1:
        raise UsageValueError(f"max_new_tokens={max_new_tokens} must be at least 1")
    ids = input_ids.reshape(1, -1) if input_ids.dim() == 1 else input_ids
    if ids.shape[0] != 1:
        raise UsageValueError(f"greedy_decode decodes one prompt; got a batch of {ids.shape[0]}")
    prompt = ids.shape[1]
    if prompt == 0:
        raise UsageValueError("the prompt has no tokens")
    device = next(model.parameters()).device
    ids = ids.to(device)
    config = model.config
    cache = StaticCache(config=config, max_cache_len=prompt + max_new_tokens)
    out = torch.empty(max_new_tokens, dtype=torch.long, device=device)
    token = torch.empty(1, 1, dtype=torch.long, device=device)
    logits_rows = [] if return_logits else None
    stop_ids = set() if eos_token_id is None else {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id)
    watch = bool(stop_ids) or on_token is not None

    def pick(logits: torch.Tensor, index: int) -> bool:
        """Store the argmax of the last logits as token `index`; True when decoding should stop."""
        last = logits[0, -1]
        if logits_rows is not None:
            logits_rows.append(last.float().clone())
        torch.argmax(last, dim=-1, keepdim=True, out=out[index : index + 1])
        token.view(1).copy_(out[index : index + 1])
        if not watch:
            return False
        value = int(out[index])
        if on_token is not None:
            on_token(value)
        return value in stop_ids

    produced = 0
    with torch.inference_mode():
        start = time.perf_counter()
        logits = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits
        stop = pick(logits, 0)
        produced = 1
        first = time.perf_counter()
        while produced < max_new_tokens and not stop:
            logits = model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1).logits
            stop = pick(logits, produced)
            produced += 1
        end = time.perf_counter()
    result = LeanDecodeResult(out[:produced].clone(), first - start, end - first)
    if return_logits:
        return result, torch.stack(logits_rows)
    return result


__all__ = ["FusedRMSNorm", "LeanDecodeResult", "RotaryTable", "greedy_decode", "prepare_lean_decoding",
           "undo_lean_decoding"]
