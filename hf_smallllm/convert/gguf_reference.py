"""A llama.cpp-style reference forward over a GGUF file: what `package_to_gguf` compares the package model with
before it renames an export into place, and what the tests compare llama.cpp itself with.

It reads the file back (`read_gguf`: metadata and dequantized float32 tensors) and runs the graph llama.cpp runs
for the architectures the export writes (`llama`, `chatglm`, `jais`): its RoPE pairing (adjacent pairs, `NORM`),
ALiBi slopes from `attention.max_alibi_bias`, its norms and MLPs, in float32 on the CPU. Export lives in `gguf.py`;
this module only reads.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

ARCHITECTURES = ("llama", "chatglm", "jais")  # the llama.cpp graphs this forward reproduces (what the export writes)

def read_gguf(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(metadata, float32 tensors in torch layout [out, in]) of a GGUF file; quantized tensors are dequantized.
    Tokenizer string arrays are left as counts. (transformers' GGUF reader: ~20x faster than `gguf.GGUFReader` on
    a 32k-entry vocabulary.)"""
    from gguf import quants
    from transformers.integrations.gguf.reader import GgufHeader, load_gguf_state_dict, read_gguf_metadata

    metadata, _ = read_gguf_metadata(str(path))
    header = GgufHeader.from_file(str(path))
    lazy = load_gguf_state_dict(header)
    tensors = {}
    for info in header.tensors:
        raw = np.array(lazy[info.name].data)
        values = quants.dequantize(raw, info.ggml_type) if info.ggml_type != 0 else raw.view(np.float32)
        tensors[info.name] = torch.from_numpy(np.array(values, dtype=np.float32)).reshape(info.shape)
    return metadata, tensors


def _rope_adjacent(x: torch.Tensor, positions: torch.Tensor, n_rot: int, base: float, scale: float) -> torch.Tensor:
    """llama.cpp's NORM rope: pairs (2i, 2i+1) of the first n_rot dims, theta_i = pos * scale * base^(-2i/n_rot).
    x: [tokens, heads, head_dim]."""
    inv = base ** (-torch.arange(0, n_rot, 2, dtype=torch.float64) / n_rot)
    angles = (positions.double()[:, None] * scale) * inv[None, :]  # [tokens, n_rot/2]
    cos, sin = angles.cos().float()[:, None, :], angles.sin().float()[:, None, :]
    even, odd = x[..., :n_rot:2], x[..., 1:n_rot:2]
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)
    return torch.cat([rotated, x[..., n_rot:]], dim=-1)


def _alibi_slopes_from_max_bias(num_heads: int, max_bias: float) -> torch.Tensor:
    n_log2 = 2 ** math.floor(math.log2(num_heads))
    m0, m1 = 2.0 ** (-max_bias / n_log2), 2.0 ** (-max_bias / 2.0 / n_log2)
    return torch.tensor([m0 ** (h + 1) if h < n_log2 else m1 ** (2 * (h - n_log2) + 1) for h in range(num_heads)])


@torch.no_grad()
def gguf_reference_logits(path: str | os.PathLike, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits [batch, tokens, vocab] of a `llama`, `chatglm` or `jais` GGUF file computed in float32 the way llama.cpp's
    graphs for those architectures do, from nothing but the file (dequantized weights, metadata). Independent of the
    package's modeling code: the logit check of `package_to_gguf` compares the two."""
    meta, w = read_gguf(path)
    arch = meta["general.architecture"]
    if arch not in ARCHITECTURES:
        raise ValueError(f"{path}: architecture {arch!r}; the reference forward covers {', '.join(ARCHITECTURES)}")

    def key(name: str, default=None):
        return meta.get(f"{arch}.{name}", default)

    n_layer, n_head, n_kv = key("block_count"), key("attention.head_count"), key("attention.head_count_kv")
    hidden = key("embedding_length")
    head_dim = key("attention.key_length", hidden // n_head)
    alibi = arch == "jais"
    eps = key("attention.layer_norm_epsilon") if alibi else key("attention.layer_norm_rms_epsilon")
    n_rot = key("rope.dimension_count", head_dim)
    base = key("rope.freq_base", 10000.0)
    scale = 1.0 / key("rope.scaling.factor", 1.0) if key("rope.scaling.type") == "linear" else 1.0
    kq_scale = 1.0 / head_dim if alibi else 1.0 / math.sqrt(head_dim)
    slopes = _alibi_slopes_from_max_bias(n_head, key("attention.max_alibi_bias", 8.0)) if alibi else None

    def norm(x, prefix):
        if alibi:
            return torch.nn.functional.layer_norm(x, (hidden,), w[prefix + ".weight"], w.get(prefix + ".bias"), eps)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w[prefix + ".weight"]

    def linear(x, prefix):
        y = x @ w[prefix + ".weight"].T
        return y + w[prefix + ".bias"] if prefix + ".bias" in w else y

    outputs = []
    for row in input_ids:
        tokens = row.shape[0]
        positions = torch.arange(tokens)
        x = w["token_embd.weight"][row]
        causal = torch.full((tokens, tokens), float("-inf")).triu(1)
        if alibi:
            bias = -slopes[:, None, None] * (positions[None, :] - positions[:, None]).abs()[None].float()
            mask = causal[None] + bias
        else:
            mask = causal[None]
        for i in range(n_layer):
            b = f"blk.{i}."
            h = norm(x, b + "attn_norm")
            if b + "attn_qkv.weight" in w:
                qkv = linear(h, b + "attn_qkv")
                q, k, v = qkv.split([n_head * head_dim, n_kv * head_dim, n_kv * head_dim], dim=-1)
            else:
                q, k, v = linear(h, b + "attn_q"), linear(h, b + "attn_k"), linear(h, b + "attn_v")
            q, k, v = (t.reshape(tokens, -1, head_dim) for t in (q, k, v))
            if not alibi:
                q, k = (_rope_adjacent(t, positions, n_rot, base, scale) for t in (q, k))
            k, v = (t.repeat_interleave(n_head // n_kv, dim=1) for t in (k, v))
            scores = torch.einsum("qhd,khd->hqk", q, k) * kq_scale + mask
            attn = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(tokens, n_head * head_dim)
            x = x + linear(attn, b + "attn_output")
            h = norm(x, b + "ffn_norm")
            if b + "ffn_gate.weight" in w:
                h = torch.nn.functional.silu(linear(h, b + "ffn_gate")) * linear(h, b + "ffn_up")
            else:  # chatglm: one projection, SwiGLU over its halves
                gate, up = linear(h, b + "ffn_up").chunk(2, dim=-1)
                h = torch.nn.functional.silu(gate) * up
            x = x + linear(h, b + "ffn_down")
        x = norm(x, "output_norm")
        outputs.append(x @ w.get("output.weight", w["token_embd.weight"]).T)
    return torch.stack(outputs)


__all__ = ["gguf_reference_logits", "read_gguf"]
