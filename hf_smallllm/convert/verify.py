"""The logit check every conversion ends with: the source and the converted checkpoint, each run by its own layout's
model (see `formats.py`), on the same tokens in float32; the largest |logit difference| must stay within tolerance.

The tokens are fixed pseudo-random ids (seed 0, two rows of `length`, capped by the context length), so a report can
be reproduced. The default tolerance of 1e-4 is the one the model parity tests use; measured differences are ~1e-6
(the same arithmetic in a different order) and exactly 0 when both sides run the same code.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass

import torch

DEFAULT_TOLERANCE = 1e-4
DEFAULT_LENGTH = 32


class ConversionVerificationError(ValueError):
    """The converted checkpoint does not compute what the source computes."""


@dataclass(frozen=True)
class LogitCheck:
    max_abs_diff: float
    tolerance: float
    shape: tuple[int, ...]
    compared: str  # "<source model> vs <converted model>"

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def logit_check_line(check: LogitCheck | None) -> str:
    """The line a conversion report gives its logit check (or its absence)."""
    if check is None:
        return "  logit check: skipped"
    return (f"  logit check ({check.compared}, tokens {list(check.shape[:2])}): max |logit difference| "
            f"{check.max_abs_diff:.2e} <= tolerance {check.tolerance:.1e}")


def logit_check_fields(check: LogitCheck | None) -> dict:
    """The logit check's numbers as a report's JSON fields."""
    return {"max_abs_logit_diff": None if check is None else check.max_abs_diff,
            "tolerance": None if check is None else check.tolerance}


def verification_ids(vocab_size: int, max_positions: int, length: int = DEFAULT_LENGTH, batch: int = 2
                     ) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab_size, (batch, max(1, min(length, max_positions))), generator=generator)


def check_logits(source: Callable[[torch.Tensor], torch.Tensor], converted: Callable[[torch.Tensor], torch.Tensor],
                 input_ids: torch.Tensor, tolerance: float, compared: str) -> LogitCheck:
    """Run `source` then `converted` (never both models in memory at once) and compare their logits."""
    expected = source(input_ids)
    gc.collect()
    actual = converted(input_ids)
    gc.collect()
    if expected.shape != actual.shape:
        raise ConversionVerificationError(
            f"logit check ({compared}): shapes differ, {list(expected.shape)} vs {list(actual.shape)}")
    diff = (expected.float() - actual.float()).abs().max().item()
    if diff != diff:  # NaN
        raise ConversionVerificationError(f"logit check ({compared}): the logits contain NaN")
    check = LogitCheck(diff, tolerance, tuple(expected.shape), compared)
    if not check.passed:
        raise ConversionVerificationError(
            f"logit check failed ({compared}): max |logit difference| {diff:.3e} exceeds the tolerance "
            f"{tolerance:.1e}; nothing was written")
    return check


__all__ = ["DEFAULT_LENGTH", "DEFAULT_TOLERANCE", "ConversionVerificationError", "LogitCheck", "check_logits",
           "verification_ids"]
