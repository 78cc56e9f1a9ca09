"""Named tensor transforms between a fused or transposed foreign layout and the package's separate nn.Linear tensors.

Every transform maps one foreign tensor to one or more package tensors (`to_package`) and back (`from_package`); the
two are exact inverses (pure data movement, no arithmetic), which is what makes round trips bitwise. The shape a
foreign tensor must have is `from_package` applied to meta tensors of the expected package shapes, so no table
repeats a size.

Facts behind the layouts (docs/architectures.md): GPT-2 `Conv1D` stores [in, out] (1.3); BTLM's `c_attn` columns are
q | k | v (1.3); ChatGLM's `key_value` rows are all K heads then all V heads and `dense_h_to_4h` is gate then up (5.2);
lit-gpt's fused `attn.attn` rows are grouped per key/value head as [that group's q heads | its k head | its v head]
(3.3, `lit_gpt/model.py` views the output as (groups, q_per_kv + 2, head_size)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch


class TensorTransform(Protocol):
    def to_package(self, fused: torch.Tensor, shapes: Sequence[torch.Size], config) -> list[torch.Tensor]:
        """Foreign tensor -> package tensors of the given shapes."""

    def from_package(self, parts: Sequence[torch.Tensor], config) -> torch.Tensor:
        """Package tensors -> the foreign tensor."""


class Identity:
    def to_package(self, fused, shapes, config):
        return [fused]

    def from_package(self, parts, config):
        return parts[0]


class Transpose:
    """GPT-2 `Conv1D` weight [in, out] <-> nn.Linear weight [out, in]."""

    def to_package(self, fused, shapes, config):
        return [fused.t()]

    def from_package(self, parts, config):
        return parts[0].t()


class SplitRows:
    """Tensors stacked along dim 0 (output features), in the order of the table's targets."""

    def to_package(self, fused, shapes, config):
        return list(torch.split(fused, [shape[0] for shape in shapes], dim=0))

    def from_package(self, parts, config):
        return torch.cat(list(parts), dim=0)


class TransposeSplitRows:
    """A `Conv1D` weight [in, sum(out)] whose output columns stack several projections (BTLM's `c_attn`)."""

    def to_package(self, fused, shapes, config):
        return SplitRows().to_package(fused.t(), shapes, config)

    def from_package(self, parts, config):
        return SplitRows().from_package(parts, config).t()


class GroupedQKV:
    """lit-gpt's fused QKV: per key/value group, that group's query heads, then one key head, then one value head.
    Works for weights [rows, in] and biases [rows]. Query head h belongs to group h // (heads / kv_heads), the same
    grouping as transformers' `repeat_kv`, so no head is reordered across groups."""

    def to_package(self, fused, shapes, config):
        groups, q_per_kv, head_dim = _group_sizes(config)
        trailing = fused.shape[1:]
        blocks = fused.reshape(groups, q_per_kv + 2, head_dim, *trailing)  # [groups, q_per_kv + 2, head_dim, ...]
        q = blocks[:, :q_per_kv].reshape(groups * q_per_kv * head_dim, *trailing)
        k = blocks[:, q_per_kv].reshape(groups * head_dim, *trailing)
        v = blocks[:, q_per_kv + 1].reshape(groups * head_dim, *trailing)
        return [q, k, v]

    def from_package(self, parts, config):
        groups, q_per_kv, head_dim = _group_sizes(config)
        q, k, v = parts
        trailing = q.shape[1:]
        q = q.reshape(groups, q_per_kv, head_dim, *trailing)
        k = k.reshape(groups, 1, head_dim, *trailing)
        v = v.reshape(groups, 1, head_dim, *trailing)
        return torch.cat([q, k, v], dim=1).reshape(groups * (q_per_kv + 2) * head_dim, *trailing)


def _group_sizes(config) -> tuple[int, int, int]:
    groups = config.num_key_value_heads
    return groups, config.num_attention_heads // groups, config.head_dim


TRANSFORMS: dict[str, TensorTransform] = {
    "identity": Identity(),
    "transpose": Transpose(),
    "split_rows": SplitRows(),
    "transpose_split_rows": TransposeSplitRows(),
    "grouped_qkv": GroupedQKV(),
}


def owned(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor with storage of its own: safetensors refuses tensors that share memory (split views do),
    and a view would keep the whole fused source tensor alive."""
    tensor = tensor.contiguous()
    return tensor.clone() if tensor._is_view() else tensor


__all__ = ["TRANSFORMS", "TensorTransform", "owned"]
