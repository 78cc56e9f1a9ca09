"""Weight-only int4 and int8 linear layers on torch's own CPU kernels, for 4-bit decoding.

A decoded token reads every weight once, so 4-bit weights are a quarter of the bytes of bf16 ones. torch ships the
kernels (the same ones torchao's `Int4CPULayout` and `Int8WeightOnlyConfig` call on CPU):

- `aten::_weight_int4pack_mm_for_cpu`: 4-bit weights in groups of `group_size` along the input, each group with a
  bf16 scale and offset (w = (q - 8) * scale + offset, q in 0..15), bf16 activations. Measured on an AMD EPYC with
  AVX-512 (2 threads, 22 distinct 5632 x 2048 matrices, batch 1): 7 ms, 18 GB/s of 4-bit weights, against 21 ms
  for the same matrices in bf16 through oneDNN. With float32 activations the same kernel has no vectorized path
  (220 ms), so the layer computes in bf16 and `load_for_inference` loads int4 models in bf16.
- `aten::_weight_int8pack_mm`: int8 weights with a scale per output row, bf16 activations (18 GB/s of int8 weights
  there). Used for the output head, as llama.cpp's q4_0 files keep the head in q8_0.

Shapes the int4 kernel refuses are padded (below); llama.cpp's q4_0 instead stores such matrices in f16 (BTLM's
6,826-wide `ffn_down`, 1.12 GB of the 2.43 GB BTLM-3B file).

Why not a library: torchao 0.18 installs against torch 2.13 and calls these same kernels for its CPU int4 layout,
adding a tensor-subclass dispatch per call; bitsandbytes' NF4 CPU path dequantizes before it multiplies (0.06x of
llama.cpp q4_0 in benchmarks/results/cpu-decode-quick.md). Inference only.
"""

from __future__ import annotations

import torch
from torch import nn

_INT8_ROW_MULTIPLE = 16
_INT8_ROWS_PER_STEP = 4096
_INT4_ROWS_PER_STEP = 2048
INT4_GROUP_SIZE = 32  # the block size of llama.cpp's q4_0, so both sides round the same number of weights together


class _WeightOnlyLinear(nn.Module):
    """What both layers do around their kernel: bf16 rows (the kernels' activation type), zero input columns for the
    padded weight, the bias, the input's shape and dtype back. Every operator counts at batch 1 (a few microseconds
    each, 7 layers x 22 blocks): no casts or copies unless the input needs them."""

    in_features: int
    out_features: int
    in_padding: int
    bias: nn.Parameter | None

    def _multiply(self, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape, dtype = x.shape, x.dtype
        rows = x if x.dim() == 2 else x.reshape(-1, self.in_features)
        if dtype != torch.bfloat16:
            rows = rows.to(torch.bfloat16)
        if self.in_padding:
            rows = nn.functional.pad(rows, (0, self.in_padding))
        y = self._multiply(rows)
        if y.shape[-1] != self.out_features:  # padded output rows
            y = y[:, : self.out_features]
        if self.bias is not None:
            y = y + self.bias
        if x.dim() != 2:
            y = y.reshape(*shape[:-1], self.out_features)
        return y if dtype == torch.bfloat16 else y.to(dtype)


class Int4Linear(_WeightOnlyLinear):
    """`nn.Linear` with 4-bit grouped weights (see the module docstring); computes in bf16, returns the input dtype.

    The kernel wants output rows in multiples of 16 and inputs in whole groups; other shapes (BTLM's 6,826-wide
    MLP) get zero rows and zero input columns, and the padded outputs are dropped."""

    def __init__(self, linear: nn.Linear, group_size: int = INT4_GROUP_SIZE):
        super().__init__()
        self.in_features, self.out_features, self.group_size = linear.in_features, linear.out_features, group_size
        self.in_padding = -self.in_features % group_size
        out_padded = self.out_features + (-self.out_features % 16)
        weight = linear.weight.detach()
        in_padded = self.in_features + self.in_padding
        q = torch.zeros(out_padded, in_padded, dtype=torch.int32)
        low = torch.zeros(out_padded, in_padded // group_size)
        scale = torch.empty_like(low)
        # rows at a time (each row's groups are quantized on their own): a whole fused gate/up matrix in float32
        # with its temporaries would be several times its bf16 size
        for start in range(0, out_padded, _INT4_ROWS_PER_STEP):
            chunk = weight[start:start + _INT4_ROWS_PER_STEP]
            rows = nn.functional.pad(chunk.float(), (0, self.in_padding, 0,
                                                     min(out_padded - start, _INT4_ROWS_PER_STEP) - len(chunk)))
            groups = rows.view(len(rows), -1, group_size)
            row_low, row_high = groups.amin(-1), groups.amax(-1)
            row_scale = ((row_high - row_low) / 15).clamp(min=torch.finfo(torch.bfloat16).tiny)
            q[start:start + len(rows)] = ((groups - row_low.unsqueeze(-1)) / row_scale.unsqueeze(-1)).round().clamp(
                0, 15).to(torch.int32).view(len(rows), -1)
            low[start:start + len(rows)], scale[start:start + len(rows)] = row_low, row_scale
        # the kernel's layout: packed [out, in / 2] uint8, and [in / group, out, 2] (scale, offset of q = 8)
        self.register_buffer("packed_weight", torch._convert_weight_to_int4pack_for_cpu(q, 1))
        self.register_buffer("scales_and_zeros", torch.stack([scale, low + 8 * scale], -1).transpose(0, 1)
                             .contiguous().to(torch.bfloat16))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(torch.bfloat16),
                                                                  requires_grad=False)

    def _multiply(self, rows: torch.Tensor) -> torch.Tensor:
        return torch._weight_int4pack_mm_for_cpu(rows, self.packed_weight, self.group_size, self.scales_and_zeros)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"


class Int8WeightOnlyLinear(_WeightOnlyLinear):
    """`nn.Linear` with int8 weights and a scale per output row; computes in bf16, returns the input dtype."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # the kernel reads past the end of rows whose length is not a multiple of 16 once it multiplies more than
        # one input row (a segmentation fault in torch 2.13): such weights get zero columns, the input zeros too
        self.in_padding = -self.in_features % _INT8_ROW_MULTIPLE
        weight = linear.weight.detach()
        quantized = torch.zeros(self.out_features, self.in_features + self.in_padding, dtype=torch.int8)
        scale = torch.empty(self.out_features)
        # rows at a time: an output head (50k x 2,560 for BTLM) would need ~4 float32 copies of itself at once
        for start in range(0, self.out_features, _INT8_ROWS_PER_STEP):
            rows = weight[start:start + _INT8_ROWS_PER_STEP].float()
            row_scale = (rows.abs().amax(-1) / 127).clamp(min=torch.finfo(torch.bfloat16).tiny)
            quantized[start:start + len(rows), : self.in_features] = (
                (rows / row_scale[:, None]).round().clamp(-127, 127).to(torch.int8))
            scale[start:start + len(rows)] = row_scale
        self.register_buffer("weight_int8", quantized)
        self.register_buffer("scale", scale.to(torch.bfloat16))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(torch.bfloat16),
                                                                  requires_grad=False)

    def _multiply(self, rows: torch.Tensor) -> torch.Tensor:
        return torch._weight_int8pack_mm(rows, self.weight_int8, self.scale)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def can_quantize_int4() -> bool:
    """Whether this torch build has the CPU int4/int8 weight-only kernels."""
    return hasattr(torch, "_convert_weight_to_int4pack_for_cpu") and hasattr(torch, "_weight_int8pack_mm")


def quantize_int4_weight_only(model: nn.Module, group_size: int = INT4_GROUP_SIZE) -> dict:
    """Replace, in place, every plain `nn.Linear` by an `Int4Linear`, except the output head, which gets an
    `Int8WeightOnlyLinear` (tied or not: a tied head gets its own int8 copy and the embedding stays as it is).
    Returns how many layers got each."""
    if not can_quantize_int4():
        raise RuntimeError("this PyTorch build lacks the CPU int4 weight-only kernels (torch >= 2.6)")
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    counts = {"int4": 0, "int8": 0}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear:
                continue
            if child is output:
                setattr(parent, name, Int8WeightOnlyLinear(child))
                counts["int8"] += 1
            else:
                setattr(parent, name, Int4Linear(child, group_size))
                counts["int4"] += 1
    return counts


__all__ = ["INT4_GROUP_SIZE", "Int4Linear", "Int8WeightOnlyLinear", "can_quantize_int4", "quantize_int4_weight_only"]
