"""Reference forward passes that read a foreign layout's tensors as they are stored, for the logit check of layouts
that transformers has no class for.

Each is a plain functional transcription of the published forward pass (fp32, causal, no cache), written against the
foreign names and shapes so that it shares no code with the key tables: a wrong split or transpose in a table shows up
as a logit difference instead of cancelling out.

- BTLM (docs/architectures.md 1.4; cross-checked in tests against
`tests/fixtures/btlm-tiny/expected_logits.safetensors`,
  produced by BTLM's reference code): embeddings x `mup_embeddings_scale`; pre-LayerNorm blocks; GPT-2 `Conv1D`
  (x @ W + b, W stored [in, out]); fused q | k | v; scores / d^p with p = 1 under `mup_scale_qk_dot_by_d`; ALiBi
  bias -slope_h * (i - j) from the stored `relative_pe.slopes` (after `alibi_scaling`); MLP
  c_proj(c_fc(x) * SiLU(c_fc2(x))); final LayerNorm; logits = h @ wte^T x (alpha x width_scale).
- lit-gpt TinyLlama (docs/architectures.md 3.3, `lit_gpt/model.py`): RMSNorm blocks; fused QKV viewed as
  (groups, q_per_kv + 2, head_size) and split (q_per_kv, 1, 1); rotate-half RoPE over the whole head
  (`rotary_percentage` 1); causal softmax / sqrt(head_size); xformers SwiGLU w3(silu(w1 x) * w2 x); untied `lm_head`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _causal_attention(q, k, v, scale: float, bias: torch.Tensor | None = None) -> torch.Tensor:
    """q [b, h, t, d], k/v [b, h, t, d] (already repeated for groups) -> [b, t, h * d]."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    if bias is not None:
        scores = scores + bias
    length = q.shape[-2]
    causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    out = torch.matmul(scores.softmax(dim=-1), v)
    return out.transpose(1, 2).reshape(q.shape[0], length, -1)


@torch.no_grad()
def btlm_official_logits(state: dict[str, torch.Tensor], config, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits of a BTLM checkpoint in its official layout (`transformer.*`, Conv1D weights)."""
    w = {k: v.float() for k, v in state.items()}
    heads, head_dim, eps = config.num_attention_heads, config.head_dim, config.norm_eps
    batch, length = input_ids.shape
    h = F.embedding(input_ids, w["transformer.wte.weight"]) * config.mup_embeddings_scale

    slopes = w.get("transformer.relative_pe.slopes")
    slopes = slopes.view(-1) if slopes is not None else _geometric_slopes(heads)
    scaling = config.alibi_scaling or {}
    if "factor" in scaling:
        slopes = slopes / scaling["factor"]
    elif "train_seq_len" in scaling and length > scaling["train_seq_len"]:
        slopes = slopes / (length / scaling["train_seq_len"])
    positions = torch.arange(length)
    distance = (positions[:, None] - positions[None, :]).clamp(min=0).float()  # i - j for the causal part
    bias = -slopes[:, None, None] * distance  # [heads, t, t]
    scale = 1.0 / head_dim if config.mup_scale_qk_dot_by_d else 1.0 / math.sqrt(head_dim)

    def conv1d(x, name):
        return x @ w[name + ".weight"] + w[name + ".bias"]

    def layer_norm(x, name):
        return F.layer_norm(x, (x.shape[-1],), w[name + ".weight"], w[name + ".bias"], eps)

    for i in range(config.num_hidden_layers):
        p = f"transformer.h.{i}."
        a = layer_norm(h, p + "ln_1")
        q, k, v = conv1d(a, p + "attn.c_attn").split(heads * head_dim, dim=-1)
        q, k, v = (t.view(batch, length, heads, head_dim).transpose(1, 2) for t in (q, k, v))
        h = h + conv1d(_causal_attention(q, k, v, scale, bias), p + "attn.c_proj")
        m = layer_norm(h, p + "ln_2")
        h = h + conv1d(conv1d(m, p + "mlp.c_fc") * F.silu(conv1d(m, p + "mlp.c_fc2")), p + "mlp.c_proj")
    h = layer_norm(h, "transformer.ln_f")
    return (h @ w["transformer.wte.weight"].t()) * config.output_logits_multiplier


def _geometric_slopes(heads: int) -> torch.Tensor:
    from ..models.attention_smallllm import alibi_slopes

    return alibi_slopes(heads)


@torch.no_grad()
def litgpt_logits(state: dict[str, torch.Tensor], config, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits of a lit-gpt (TinyLlama pretraining) checkpoint in its own layout."""
    w = {k: v.float() for k, v in state.items()}
    heads, groups, head_size = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    q_per_kv = heads // groups
    batch, length = input_ids.shape
    theta = config.rope_parameters["rope_theta"]

    inv_freq = 1.0 / (theta ** (torch.arange(0, head_size, 2).float() / head_size))
    angles = torch.outer(torch.arange(length).float(), inv_freq)  # [t, head_size / 2]
    cos, sin = angles.cos().repeat(1, 2), angles.sin().repeat(1, 2)

    def rope(x):  # [b, t, n, hs]
        x1, x2 = x[..., : head_size // 2], x[..., head_size // 2 :]
        rotated = torch.cat((-x2, x1), dim=-1)
        return x * cos[None, :, None, :] + rotated * sin[None, :, None, :]

    def rms_norm(x, name):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + config.norm_eps) * w[name]

    def linear(x, name):
        out = x @ w[name + ".weight"].t()
        return out + w[name + ".bias"] if name + ".bias" in w else out

    h = F.embedding(input_ids, w["transformer.wte.weight"])
    for i in range(config.num_hidden_layers):
        p = f"transformer.h.{i}."
        qkv = linear(rms_norm(h, p + "norm_1.weight"), p + "attn.attn")
        qkv = qkv.view(batch, length, groups, q_per_kv + 2, head_size)
        q, k, v = qkv.split((q_per_kv, 1, 1), dim=-2)
        q = rope(q.reshape(batch, length, -1, head_size))
        k = rope(k.reshape(batch, length, -1, head_size))
        v = v.reshape(batch, length, -1, head_size)
        # every query head of a group reads that group's single key/value head
        k, v = (t.repeat_interleave(q_per_kv, dim=2) for t in (k, v))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        h = h + linear(_causal_attention(q, k, v, 1.0 / math.sqrt(head_size)), p + "attn.proj")
        m = rms_norm(h, p + "norm_2.weight")
        swiglu = F.silu(linear(m, p + "mlp.swiglu.w1")) * linear(m, p + "mlp.swiglu.w2")
        h = h + linear(swiglu, p + "mlp.swiglu.w3")
    h = rms_norm(h, "transformer.ln_f.weight")
    return h @ w["lm_head.weight"].t()


__all__ = ["btlm_official_logits", "litgpt_logits"]
