"""Bandwidth-bound CPU decoding: linear layers with oneDNN-packed weights.

Decoding one token multiplies every weight matrix by a single vector, so tokens/s is bounded by how fast the
weights stream from memory. On an AMD EPYC VM (2 threads, fp32), torch's default path for an `nn.Linear` (MKL)
streams a batch-1 product at 10-20 GB/s for the shapes of these models, while oneDNN's inner product on a weight
reordered once into its blocked layout streams at 30-45 GB/s; its batch-8 and 512-row products are also 1.3-4x
faster, and published-size TinyLlama decodes ~2x faster. On an Intel Xeon VM of the same size MKL's product is as
fast or faster and packing slows decoding by ~10%. Which path wins is a property of the machine, so
`pack_linears_if_faster` times a one-token forward both ways and keeps the faster (what `load_for_inference` does
by default); `pack_linears` packs unconditionally. Logits change only by float rounding (max |diff| ~2e-5 on
TinyLlama-1.1B). Inference only: packed layers have no gradient; `unpack_linears` restores plain `nn.Linear`
modules, and saving a packed model writes dense weights.

The product is oneDNN's dense-in, dense-out inner product (`mkldnn::_linear_pointwise`, the kernel torch's
inductor uses for frozen CPU linears), so no activation is converted to or from oneDNN's layout per call. Torch
builds without it fall back to `mkldnn_linear`, which converts the activation each call.
"""

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn


def _has_pointwise_linear() -> bool:
    try:
        return hasattr(torch.ops.mkldnn, "_linear_pointwise") and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


_HAS_POINTWISE = _has_pointwise_linear()
# The layout oneDNN picks for a weight depends on the batch it expects; batch 1 (decoding) was faster for the
# published-size matrices (e.g. 44 vs 37 GB/s for 5632x2048), the default layout for 512-wide ones.
PACKED_FOR_BATCH = 1
# bf16 weights pack too: oneDNN multiplies them with AVX512-BF16/AMX instructions where the CPU has them (half the
# bytes of fp32 per token; 24 GB/s packed vs 19 GB/s through `F.linear` on an AVX512-BF16 AMD EPYC)
PACKABLE_DTYPES = (torch.float32, torch.bfloat16)


def _pack(weight: torch.Tensor) -> torch.Tensor:
    if _HAS_POINTWISE:
        return torch.ops.mkldnn._reorder_linear_weight(weight, PACKED_FOR_BATCH)
    return weight.to_mkldnn()


class PackedLinear(nn.Module):
    """An inference-only `nn.Linear` whose fp32 or bf16 weight lives in oneDNN's blocked layout."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach()
        if weight.device.type != "cpu" or weight.dtype not in PACKABLE_DTYPES:
            raise ValueError(f"PackedLinear needs a float32 or bfloat16 CPU weight, got {weight.dtype} on "
                             f"{weight.device}")
        self.dtype = weight.dtype
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        # oneDNN tensors cannot be parameters or buffers (no storage to save); `_save_to_state_dict` densifies them.
        self.packed_weight = _pack(weight)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError("PackedLinear is inference-only; call hf_smallllm.inference.unpack_linears() to train.")
        if x.dtype != self.dtype:
            raise ValueError(f"PackedLinear computes in {self.dtype}, got input of dtype {x.dtype}")
        if _HAS_POINTWISE:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")
        shape = x.shape
        y = torch._C._nn.mkldnn_linear(x.reshape(-1, self.in_features).to_mkldnn(), self.packed_weight, None)
        y = y.to_dense()
        if self.bias is not None:
            y = y + self.bias
        return y.view(*shape[:-1], self.out_features)

    def __deepcopy__(self, memo):
        return PackedLinear(self.to_linear())

    def to_linear(self) -> nn.Linear:
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, dtype=self.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.packed_weight.to_dense())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.packed_weight.to_dense()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "weight"
        if key in state_dict:
            self.packed_weight = _pack(state_dict[key].detach().to(self.dtype).contiguous())
        elif strict:
            missing_keys.append(key)
        if self.bias is not None:
            if prefix + "bias" in state_dict:
                with torch.no_grad():
                    self.bias.copy_(state_dict[prefix + "bias"])
            elif strict:
                missing_keys.append(prefix + "bias")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def can_pack_linears() -> bool:
    """Whether this torch build has oneDNN (mkldnn) CPU kernels."""
    return torch.backends.mkldnn.is_available()


# Below this many weights oneDNN's fixed cost per call (20-45 us) exceeds what its faster kernel saves (measured
# batch-1: 688x256 26 us packed vs 20 us plain; 512x512 even; 1408x512 and larger faster packed).
MIN_PACKED_WEIGHTS = 2**18


def _packable_linears(model: nn.Module, include_tied_output: bool, min_weights: int) -> list[tuple]:
    """(parent, attribute name, linear) for every layer `pack_linears` would pack."""
    tied = set()
    if not include_tied_output and getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if output is not None:
            tied.add(id(output))
    found = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear or id(child) in tied:
                continue
            if child.weight.dtype not in PACKABLE_DTYPES or child.weight.device.type != "cpu":
                continue
            if child.weight.numel() >= min_weights:
                found.append((parent, name, child))
    return found


def pack_linears(model: nn.Module, include_tied_output: bool = False, min_weights: int = MIN_PACKED_WEIGHTS) -> int:
    """Replace every plain fp32 or bf16 CPU `nn.Linear` with at least `min_weights` weights by a `PackedLinear`;
    returns how many were packed.

    A tied output head is left alone unless `include_tied_output` (packing it would duplicate the embedding matrix
    and untie the saved checkpoint). Adapter (PEFT), quantized and fp16 layers are skipped: only modules whose
    type is exactly `nn.Linear` are packed.
    """
    if not can_pack_linears():
        raise RuntimeError("this PyTorch build has no oneDNN (mkldnn) CPU support; cannot pack linear layers")
    layers = _packable_linears(model, include_tied_output, min_weights)
    for parent, name, linear in layers:
        setattr(parent, name, PackedLinear(linear))
    return len(layers)


def unpack_linears(model: nn.Module) -> int:
    """Undo `pack_linears`: every `PackedLinear` becomes an `nn.Linear` again; returns how many were restored."""
    restored = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PackedLinear):
                setattr(parent, name, child.to_linear())
                restored += 1
    return restored


@dataclass
class LinearsChoice:
    """What `pack_linears_if_faster` decided, and the timings it decided on (medians of its rounds)."""

    packed: bool
    plain_seconds: float | None = None
    packed_seconds: float | None = None
    reason: str = ""

    def describe(self) -> str:
        if self.plain_seconds is None or self.packed_seconds is None:
            return f"{'oneDNN-packed' if self.packed else 'plain'} linears ({self.reason})"
        return (f"{'oneDNN-packed' if self.packed else 'plain'} linears: one-token forward "
                f"{self.packed_seconds * 1e3:.1f} ms packed vs {self.plain_seconds * 1e3:.1f} ms plain")


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _one_token_forward_seconds(model: nn.Module) -> float:
    """Wall time of one forward of a single token without a cache: every weight is read once, as in decoding."""
    token = torch.zeros(1, 1, dtype=torch.long, device=next(model.parameters()).device)
    with torch.no_grad():
        start = time.perf_counter()
        model(input_ids=token, use_cache=False)
        return time.perf_counter() - start


def pack_linears_if_faster(model: nn.Module, rounds: int = 6, margin: float = 0.03, include_tied_output: bool = False,
                           min_weights: int = MIN_PACKED_WEIGHTS) -> LinearsChoice:
    """Pack the model's linears (as `pack_linears` would) only if that makes a one-token forward at least `margin`
    faster on this machine; otherwise keep plain `nn.Linear`. oneDNN's packed product doubles decoding speed where
    MKL's matrix-vector product is slow (AMD EPYC) and costs ~10-15% where it is not (Intel Xeon), so the choice is
    measured rather than assumed.

    Both versions are timed in alternating order over `rounds` rounds (after a warm-up of each), and the decision
    is the median per-round ratio, so a burst of machine noise cannot decide it. That needs the packed copy next to
    the dense weights while timing; when the machine lacks the memory for it, the two are timed one after the
    other instead (packing, then unpacking if it did not pay)."""
    if not can_pack_linears():
        return LinearsChoice(False, reason="this PyTorch build has no oneDNN CPU kernels")
    layers = _packable_linears(model, include_tied_output, min_weights)
    if not layers:
        return LinearsChoice(False, reason="no linear layer is large enough to gain from packing")
    was_training = model.training
    model.eval()
    try:
        extra = sum(linear.weight.numel() * linear.weight.element_size() for _, _, linear in layers)
        available = available_memory_bytes()
        if available is None or extra * 1.25 > available:  # one copy at a time
            plain = [_one_token_forward_seconds(model) for _ in range(rounds + 1)][1:]
            pack_linears(model, include_tied_output, min_weights)
            packed = [_one_token_forward_seconds(model) for _ in range(rounds + 1)][1:]
            ratio = statistics.median(packed) / statistics.median(plain)
            if ratio >= 1.0 - margin:
                unpack_linears(model)
            return LinearsChoice(ratio < 1.0 - margin, statistics.median(plain), statistics.median(packed))

        versions = {"plain": [linear for _, _, linear in layers],
                    "packed": [PackedLinear(linear) for _, _, linear in layers]}

        def use(kind: str) -> None:
            for (parent, name, _), module in zip(layers, versions[kind], strict=True):
                setattr(parent, name, module)

        times = {"plain": [], "packed": []}
        for round_index in range(rounds + 1):
            for kind in (("plain", "packed") if round_index % 2 == 0 else ("packed", "plain")):
                use(kind)
                seconds = _one_token_forward_seconds(model)
                if round_index:  # round 0 warms both up
                    times[kind].append(seconds)
        ratio = statistics.median(p / q for p, q in zip(times["packed"], times["plain"], strict=True))
        faster = ratio < 1.0 - margin
        use("packed" if faster else "plain")
        return LinearsChoice(faster, statistics.median(times["plain"]), statistics.median(times["packed"]))
    finally:
        model.train(was_training)


__all__ = ["LinearsChoice", "PackedLinear", "can_pack_linears", "pack_linears", "pack_linears_if_faster",
           "unpack_linears"]
