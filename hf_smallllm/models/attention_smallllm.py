"""Attention kernels and ALiBi for hf_smallllm.

- `eager_attention_forward`: the reference kernel behind `attn_implementation="eager"` (fp32 softmax, additive mask).
- ALiBi (Press et al., 2022): the standard geometric slopes, including the interleaved extension for head counts
  that are not powers of two, BTLM's position interpolation (`alibi_scaling`), and the bias
  `-slope_h * |i - j|` built once per forward from token indices. Index distances equal position distances inside
  a document, so the same bias is right for left-padded batches (padding is masked) and for packed rows
  (cross-document pairs are masked).
- `alibi_flash_attention_forward`: the flash-attn 2 path for ALiBi. transformers' stock flash path forwards only the
  keyword arguments it knows, so `alibi_slopes` would be dropped silently; this one passes them to flash-attn.

This file ships to the Hub as remote code: it imports only torch, transformers and its siblings.
"""

import math

import torch
from torch import nn

from transformers.utils import logging


logger = logging.get_logger(__name__)


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[batch, kv_heads, seq, dim] -> [batch, kv_heads * n_rep, seq, dim], each key/value head serving n_rep queries."""
    batch, num_key_value_heads, seq_len, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, seq_len, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, seq_len, head_dim)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    position_bias: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention. `attention_mask` is additive ([batch, 1 or heads, q, kv]); `position_bias` too."""
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)

    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if position_bias is not None:
        attn_weights = attn_weights + position_bias
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask[..., : key_states.shape[-2]]

    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)
    attn_output = attn_output.transpose(1, 2).contiguous()  # [batch, seq, heads, dim]
    return attn_output, attn_weights


# ---------------------------------------------------------------------------------------------------------- ALiBi
def alibi_slopes(num_heads: int) -> torch.Tensor:
    """Standard ALiBi slopes: 2^(-8k/n) for k = 1..n when n is a power of two; otherwise the slopes of the closest
    lower power of two followed by every other slope of the next power of two (Press et al., appendix)."""

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (k + 1) / n) for k in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = geometric(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = geometric(closest) + geometric(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


class SmallLLMAlibi(nn.Module):
    """Per-head ALiBi slopes and the additive bias built from them, once per forward pass."""

    def __init__(self, config):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.alibi_scaling = config.alibi_scaling
        # Derived from the head count, never learned: non-persistent, and recomputed in `_init_weights`.
        self.slopes = nn.Buffer(alibi_slopes(self.num_heads), persistent=False)

    def scaled_slopes(self, kv_length: int) -> torch.Tensor:
        """Slopes after position interpolation: divided by a fixed `factor`, or (dynamic) by
        `kv_length / train_seq_len` once the attended length exceeds the training length."""
        if self.alibi_scaling is None:
            return self.slopes
        if "factor" in self.alibi_scaling:
            return self.slopes / float(self.alibi_scaling["factor"])
        ratio = kv_length / self.alibi_scaling["train_seq_len"]
        return self.slopes / ratio if ratio > 1.0 else self.slopes

    def forward(self, query_positions: torch.Tensor, kv_length: int, dtype: torch.dtype) -> torch.Tensor:
        """Bias [1, heads, q, kv] = -slope_h * |query index - key index|; `query_positions` are the queries' indices
        in the key sequence (past length + arange for a cached forward)."""
        key_positions = torch.arange(kv_length, device=query_positions.device)
        distance = (query_positions[:, None] - key_positions[None, :]).abs().to(torch.float32)  # [q, kv]
        slopes = self.scaled_slopes(kv_length).to(query_positions.device)
        return (-slopes[:, None, None] * distance).unsqueeze(0).to(dtype)


def add_bias_to_mask(mask: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Fold an additive bias [1, heads, q, kv] into a mask [batch, 1, q, kv] that is either boolean (True = attend,
    sdpa) or additive float (0 = attend, eager). Returns one additive float mask [batch, heads, q, kv] for every layer.
    Masked entries get the dtype's minimum, not -inf, so fully masked padding rows stay finite."""
    allowed = mask if mask.dtype == torch.bool else mask == 0
    return torch.where(allowed, bias.to(dtype), torch.finfo(dtype).min)


def alibi_flash_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    alibi_slopes: torch.Tensor | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    max_length_q: int | None = None,
    max_length_k: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """flash-attn 2 with ALiBi slopes: dense causal, unpadded varlen (2D padding mask) or packed varlen
    (`cu_seq_lens_*`). flash-attn adds -slope * |i + k_len - q_len - j|, i.e. bottom-right aligned like a cache."""
    from transformers.integrations.flash_attention import get_target_dtype
    from transformers.modeling_flash_attention_utils import _upad_input, lazy_import_flash_attention

    (flash_fn, flash_varlen_fn, _, pad_fn, unpad_fn), _ = lazy_import_flash_attention(
        module.config._attn_implementation
    )
    batch_size, _, query_length, _ = query.shape
    # flash-attn takes [batch, seq, heads, dim]
    query, key, value = (t.transpose(1, 2) for t in (query, key, value))
    target_dtype = get_target_dtype(query, module)
    if target_dtype is not None:
        query, key, value = (t.to(target_dtype) for t in (query, key, value))
    flash_kwargs = {
        "dropout_p": dropout,
        "softmax_scale": scaling,
        "causal": True,
        "alibi_slopes": None if alibi_slopes is None else alibi_slopes.to(device=query.device, dtype=torch.float32),
    }

    if attention_mask is not None:  # left/right padding: unpad, run varlen, pad back
        q, k, v, indices_q, (cu_q, cu_k), (max_q, max_k) = _upad_input(
            query, key, value, attention_mask, query_length, unpad_fn
        )
        out = flash_varlen_fn(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max_q, max_seqlen_k=max_k,
                              **flash_kwargs)
        out = out[0] if isinstance(out, tuple) else out
        return pad_fn(out, indices_q, batch_size, query_length), None
    if cu_seq_lens_q is not None:  # packed documents, flattened over the batch
        q, k, v = (t.reshape(-1, *t.shape[-2:]) for t in (query, key, value))
        out = flash_varlen_fn(q, k, v, cu_seqlens_q=cu_seq_lens_q, cu_seqlens_k=cu_seq_lens_k,
                              max_seqlen_q=max_length_q, max_seqlen_k=max_length_k, **flash_kwargs)
        out = out[0] if isinstance(out, tuple) else out
        return out.view(batch_size, -1, *out.shape[-2:]), None
    out = flash_fn(query, key, value, **flash_kwargs)
    return (out[0] if isinstance(out, tuple) else out), None


def is_flash_attention(attn_implementation: str | None) -> bool:
    return attn_implementation is not None and "flash" in attn_implementation


__all__ = [
    "SmallLLMAlibi",
    "add_bias_to_mask",
    "alibi_flash_attention_forward",
    "alibi_slopes",
    "eager_attention_forward",
    "is_flash_attention",
    "repeat_kv",
]
