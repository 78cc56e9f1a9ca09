"""Where a decode step's time goes: weight products, other operators, and Python, from the torch profiler.

A decoded token's wall time splits into the time spent inside top-level torch operators (those no other operator
called) and the time between them, which is the Python that calls them (module `__call__`s, argument handling,
`generate()`'s bookkeeping). Top-level operators split again into the products with a weight matrix (the linear
kernels of every backend: `aten::linear`/`aten::mm` for plain layers, oneDNN's `mkldnn::_linear_pointwise`,
fbgemm's `quantized::linear_dynamic`, the int4/int8 weight-only kernels) and everything else (norms, rotary,
attention, cache writes, the argmax). The profiler adds a few microseconds to every operator, so the Python share
is an upper bound; the products are measured as they run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Top-level operators that multiply by a weight matrix (the matmul of a decode step)
WEIGHT_PRODUCTS = frozenset({
    "aten::linear", "aten::addmm", "aten::mm", "aten::matmul", "aten::mv",
    "mkldnn::_linear_pointwise", "aten::mkldnn_linear", "quantized::linear_dynamic",
    "aten::_weight_int4pack_mm_for_cpu", "aten::_weight_int8pack_mm", "aten::_weight_int4pack_mm",
    "aten::_dyn_quant_matmul_4bit",
})


@dataclass
class StepSplit:
    """Milliseconds per decoded token."""

    total_ms: float
    products_ms: float
    other_ops_ms: float
    python_ms: float
    operators_per_token: float

    def describe(self) -> str:
        return (f"{self.total_ms:.1f} ms/token: weight products {self.products_ms:.1f}, other operators "
                f"{self.other_ops_ms:.1f}, Python {self.python_ms:.1f} ({self.operators_per_token:.0f} operators)")

    def to_dict(self) -> dict:
        return {key: round(value, 2) for key, value in vars(self).items()}


def profile_decode_split(decode: Callable[[], int]) -> StepSplit:
    """Profile one call of `decode`, which decodes and returns the number of tokens it timed; the split covers the
    whole call divided by that number (call it with a prompt short enough that prefill is a small share, or pass
    a function that prefills outside the profiled part)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        tokens = decode()
        wall_us = (time.perf_counter() - start) * 1e6
    products = other = 0.0
    count = 0
    for event in prof.events():
        if event.cpu_parent is not None or event.name.startswith("<") or event.name.startswith("["):
            continue  # nested operators are inside their parent's time; skip record_function ranges
        if event.name.startswith("ProfilerStep") or event.name.startswith("##"):
            continue
        count += 1
        if event.name in WEIGHT_PRODUCTS:
            products += event.cpu_time_total
        else:
            other += event.cpu_time_total
    tokens = max(tokens, 1)
    per = 1e-3 / tokens
    return StepSplit(wall_us * per, products * per, other * per, max(0.0, wall_us - products - other) * per,
                     count / tokens)


__all__ = ["WEIGHT_PRODUCTS", "StepSplit", "profile_decode_split"]
