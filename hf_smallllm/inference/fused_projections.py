"""Fused projections for CPU decoding: q/k/v, and gate/up, as one matrix each.

Decoding one token multiplies every weight matrix by one vector. The query, key and value projections read the same
input, as do the MLP's gate and up projections, so their weights can be stacked into one matrix and read in one
product: 4 products per layer instead of 7. On CPU that removes per-call cost (oneDNN's fixed 20-45 us, the
activation quantization of a dynamic int8 layer, done once instead of three times) and gives the kernel one long
matrix instead of two short key/value ones (measured on the 1.1B TinyLlama shape, 2 threads: the 22 layers'
products take 128-132 ms fused vs 137-142 ms separate; see docs/performance.md).

`fuse_projections(model)` changes the modules in place, the modeling code stays as it is: the stacked matrix lives in
a `FusedProjection` (a plain `nn.Linear` inside, so `pack_linears` and `quantize_int8_dynamic` treat it like any
other layer), and `q_proj`, `k_proj`, `v_proj` become `ProjectionSlice`s that return their part of its output. The
first slice called with an input computes the product; the others take their part of the same result (the parts
are dropped once every slice has taken its own). This relies on the forward calling each projection once with the
same tensor, which is how `SmallLLMAttention` and `SmallLLMMLP` are written; only those classes are fused.

Inference only, and not under torch.compile (the slices keep Python state between calls); `load_for_inference`
fuses CPU models that are not compiled. `state_dict()` keeps the unfused keys and values (each slice saves its rows
of the stacked weight) so a fused model saves like the original; `unfuse_projections` restores the modules. Once the
stack is quantized it saves under its own name, like any quantized layer.
"""

import torch
from torch import nn

# (parent class name, projection names sharing one input)
FUSABLE = {"SmallLLMAttention": ("q_proj", "k_proj", "v_proj"), "SmallLLMMLP": ("gate_proj", "up_proj")}


class FusedProjection(nn.Module):
    """Several linear projections of one input computed as one product (see the module docstring)."""

    def __init__(self, linears: list[nn.Linear]):
        super().__init__()
        first = linears[0]
        has_bias = first.bias is not None
        self.sizes = [linear.out_features for linear in linears]
        self.linear = nn.Linear(first.in_features, sum(self.sizes), bias=has_bias, device=first.weight.device,
                                dtype=first.weight.dtype)
        with torch.no_grad():
            self.linear.weight.copy_(torch.cat([linear.weight for linear in linears]))
            if has_bias:
                self.linear.bias.copy_(torch.cat([linear.bias for linear in linears]))
        self.linear.requires_grad_(False)
        self._input = None
        self._parts = None
        self._left = 0

    def part(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if self._parts is None or x is not self._input:
            self._parts = self.linear(x).split(self.sizes, dim=-1)
            self._input, self._left = x, len(self.sizes)
        part = self._parts[index]
        self._left -= 1
        if self._left <= 0:  # every slice has its part: hold no activations between forwards
            self._input = self._parts = None
        return part

    def is_dense(self) -> bool:
        """Whether the stacked weight can be read back densely (plain or oneDNN-packed, not quantized)."""
        return isinstance(self.linear, nn.Linear) or hasattr(self.linear, "packed_weight")

    def dense_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The stacked weight and bias as dense tensors; None once the inner linear is quantized."""
        linear = self.linear
        if isinstance(linear, nn.Linear):
            return linear.weight, linear.bias
        if hasattr(linear, "packed_weight"):  # PackedLinear
            return linear.packed_weight.to_dense(), linear.bias
        return None

    def state_dict(self, *args, destination=None, prefix="", keep_vars=False):
        if not self.is_dense():  # quantized: save the stacked layer as it is
            return super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        # the slices save their rows under the original names; the stacked copy is not saved twice
        return destination if destination is not None else {}


class ProjectionSlice(nn.Module):
    """One projection's part of a `FusedProjection` (stands where the projection's `nn.Linear` was)."""

    def __init__(self, fused: FusedProjection, index: int, in_features: int, out_features: int):
        super().__init__()
        object.__setattr__(self, "fused", fused)  # not a child: the parent owns it once, under `fused_<names>`
        self.index = index
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused.part(self.index, x)

    def _rows(self) -> slice:
        start = sum(self.fused.sizes[: self.index])
        return slice(start, start + self.out_features)

    def to_linear(self) -> nn.Linear:
        dense = self.fused.dense_weight_and_bias()
        if dense is None:
            raise NotImplementedError(f"cannot split a quantized {type(self.fused.linear).__name__} back into "
                                      "projections; unfuse before quantizing")
        weight, bias = dense
        linear = nn.Linear(self.in_features, self.out_features, bias=bias is not None, device=weight.device,
                           dtype=weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight[self._rows()])
            if bias is not None:
                linear.bias.copy_(bias[self._rows()])
        return linear

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        dense = self.fused.dense_weight_and_bias()
        if dense is None:
            return  # the quantized stack saves itself
        weight, bias = dense
        destination[prefix + "weight"] = weight[self._rows()].detach().clone()
        if bias is not None:
            destination[prefix + "bias"] = bias[self._rows()].detach().clone()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, part={self.index}"


def fuse_projections(model: nn.Module) -> int:
    """Stack the q/k/v and gate/up projections of every attention and MLP block of the shared core into one matrix
    each; returns how many groups were fused. Only plain `nn.Linear` projections with the same input size, dtype,
    device and bias setting are fused (adapters, quantized or already packed layers are left alone)."""
    fused = 0
    for parent in list(model.modules()):
        names = FUSABLE.get(type(parent).__name__)
        if names is None or not all(type(getattr(parent, name, None)) is nn.Linear for name in names):
            continue
        linears = [getattr(parent, name) for name in names]
        first = linears[0]
        if any(linear.in_features != first.in_features or linear.weight.dtype != first.weight.dtype
               or linear.weight.device != first.weight.device or (linear.bias is None) != (first.bias is None)
               for linear in linears):
            continue
        group = FusedProjection(linears)
        setattr(parent, "fused_" + "_".join(name.removesuffix("_proj") for name in names), group)
        for index, (name, linear) in enumerate(zip(names, linears, strict=True)):
            setattr(parent, name, ProjectionSlice(group, index, linear.in_features, linear.out_features))
        fused += 1
    return fused


def unfuse_projections(model: nn.Module) -> int:
    """Undo `fuse_projections` (dense or oneDNN-packed stacks); returns how many groups were split again."""
    restored = 0
    for parent in list(model.modules()):
        names = FUSABLE.get(type(parent).__name__)
        if names is None or not isinstance(getattr(parent, names[0], None), ProjectionSlice):
            continue
        for name in names:
            setattr(parent, name, getattr(parent, name).to_linear())
        delattr(parent, "fused_" + "_".join(name.removesuffix("_proj") for name in names))
        restored += 1
    return restored


__all__ = ["FusedProjection", "ProjectionSlice", "fuse_projections", "unfuse_projections"]
