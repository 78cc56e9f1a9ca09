"""argparse `type=` functions for numbers in a range, so that `--temperature -1` or `--top-p 5` is argparse's
one-line error (exit status 2) instead of being passed on. Standard library only: this runs while parsing.
Devices are checked by the shared loader (`hf_smallllm.inference.loading.check_device`).
"""

import argparse
import math


def number_type(kind: type, allowed: str, ok):
    """An argparse `type=` that parses `kind` and accepts it only when `ok(value)`; `allowed` is said otherwise."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if (kind is float and not math.isfinite(value)) or not ok(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {allowed}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


NON_NEGATIVE_FLOAT = number_type(float, ">= 0", lambda v: v >= 0)
POSITIVE_FLOAT = number_type(float, "> 0", lambda v: v > 0)
PROBABILITY = number_type(float, "in (0, 1]", lambda v: 0 < v <= 1)
NON_NEGATIVE_INT = number_type(int, ">= 0", lambda v: v >= 0)
POSITIVE_INT = number_type(int, ">= 1", lambda v: v >= 1)


__all__ = ["NON_NEGATIVE_FLOAT", "NON_NEGATIVE_INT", "POSITIVE_FLOAT", "POSITIVE_INT", "PROBABILITY", "number_type"]
