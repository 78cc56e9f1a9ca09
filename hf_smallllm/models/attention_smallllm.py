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
    """Per-head ALiBi slopes and the additive bias built from them, once per forward pass. One-token decoding steps
    take their bias as a view of a table kept across steps (`decode_bias`), so a step computes no bias at all."""

    def __init__(self, config):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.alibi_scaling = config.alibi_scaling
        # Derived from the head count, never learned: non-persistent, and recomputed in `_init_weights`.
        self.slopes = nn.Buffer(alibi_slopes(self.num_heads), persistent=False)
        # decode_bias's (table, slopes it was built from): a plain tuple attribute, so never saved, moved or traced
        self._decode_table: tuple[torch.Tensor, torch.Tensor] | None = None

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


    def decode_bias(self, past_length: int, dtype: torch.dtype) -> torch.Tensor:
        """Bias [1, heads, 1, past_length + 1] of one query at key index `past_length` over every key up to itself.

        Served as a slice of a table `T[h, t] = -slope_h * (capacity - 1 - t)`: the query's bias over keys
        0..past_length is T[h, capacity - 1 - past_length :], so consecutive steps read overlapping views of one
        tensor, and the table is rebuilt (doubling its capacity) only when the sequence outgrows it, or when the
        slopes, dtype or device change (dynamic interpolation past the training length changes them every step)."""
        slopes = self.scaled_slopes(past_length + 1)
        table, built_from = self._decode_table or (None, None)
        if (
            table is None
            or table.shape[-1] < past_length + 1
            or table.dtype != dtype
            or table.device != slopes.device
            or not torch.equal(built_from, slopes)
        ):
            capacity = max(2 * (past_length + 1), 256)
            if table is not None and table.shape[-1] >= past_length + 1:
                capacity = table.shape[-1]
            distance = torch.arange(capacity - 1, -1, -1, device=slopes.device, dtype=torch.float32)
            table = (-slopes.to(torch.float32)[:, None] * distance).to(dtype)
            self._decode_table = (table, slopes.detach().clone())
        return table[None, :, None, table.shape[-1] - 1 - past_length :]


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


# Above this many query x key entries per head, sdpa ALiBi attention of an unpadded causal row (no packed documents)
# runs query block by query block (`alibi_blockwise_attention_forward`) instead of with one dense [batch, heads, q,
# kv] bias; at 2,048 x 2,048 the dense bias is 16 MiB per head in fp32.
ALIBI_DENSE_MAX_ENTRIES = 2048 * 2048
# Bias entries (heads x block queries x keys) built at a time by the blockwise path: 64 MiB of fp32.
ALIBI_BLOCK_ENTRIES = 16 * 1024 * 1024


def wants_blockwise_alibi(query_length: int, kv_length: int) -> bool:
    """Whether a row is long enough for the blockwise ALiBi path (read at call time, so tests can lower the limit)."""
    return query_length * kv_length > ALIBI_DENSE_MAX_ENTRIES


def _alibi_causal_block(query, key, value, slopes, query_start: int, scaling: float, dropout: float):
    """sdpa over one block of queries starting at key index `query_start`, with the ALiBi bias and the causal mask
    of that block only ([heads, block, keys]); `key`/`value` end at the block's last query."""
    query_positions = torch.arange(query_start, query_start + query.shape[-2], device=query.device)
    key_positions = torch.arange(key.shape[-2], device=query.device)
    distance = (query_positions[:, None] - key_positions[None, :]).to(torch.float32)  # >= 0 where attended
    bias = (-slopes[:, None, None] * distance.abs()).masked_fill(distance < 0, torch.finfo(torch.float32).min)
    return nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=bias.to(query.dtype).unsqueeze(0), dropout_p=dropout, scale=scaling
    )


class _AlibiBlockwiseAttention(torch.autograd.Function):
    """Causal ALiBi attention over query blocks whose backward recomputes one block at a time: only q, k, v and the
    output are kept for the backward pass, never a block's bias or probabilities (activation checkpointing through
    `torch.utils.checkpoint` kept every block's key slice alive until the backward pass)."""

    @staticmethod
    def forward(ctx, query, key, value, slopes, scaling, block):
        offset = key.shape[-2] - query.shape[-2]
        outputs = [
            _alibi_causal_block(query[:, :, s:s + block], key[:, :, : offset + s + block],
                                value[:, :, : offset + s + block], slopes, offset + s, scaling, 0.0)
            for s in range(0, query.shape[-2], block)
        ]
        ctx.save_for_backward(query, key, value, slopes)
        ctx.scaling, ctx.block = scaling, block
        return torch.cat(outputs, dim=2)

    @staticmethod
    def backward(ctx, grad_output):
        query, key, value, slopes = ctx.saved_tensors
        block, offset = ctx.block, key.shape[-2] - query.shape[-2]
        grad_query, grad_key, grad_value = torch.zeros_like(query), torch.zeros_like(key), torch.zeros_like(value)
        for s in range(0, query.shape[-2], block):
            end = offset + min(query.shape[-2], s + block)
            with torch.enable_grad():
                q = query[:, :, s:s + block].detach().requires_grad_()
                k, v = key[:, :, :end].detach().requires_grad_(), value[:, :, :end].detach().requires_grad_()
                out = _alibi_causal_block(q, k, v, slopes, offset + s, ctx.scaling, 0.0)
                dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad_output[:, :, s:s + block])
            grad_query[:, :, s:s + block] = dq
            grad_key[:, :, :end] += dk
            grad_value[:, :, :end] += dv
        return grad_query, grad_key, grad_value, None, None, None


def alibi_blockwise_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    alibi_slopes: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Causal ALiBi attention (sdpa) without a [q, kv] bias: queries go in blocks sized so that one block's bias
    holds `ALIBI_BLOCK_ENTRIES` entries, each block attends only to the keys up to its last query, and the backward
    pass recomputes block by block, so neither pass holds more than one block's bias. Same result as the dense path;
    queries are bottom-right aligned with the keys (a cached forward). Only for rows without padding or packed
    documents (`attention_mask` None)."""
    if attention_mask is not None:
        raise ValueError("the blockwise ALiBi path handles unpadded causal rows only; pass the dense mask path")
    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    num_heads, query_length, kv_length = query.shape[1], query.shape[-2], key.shape[-2]
    slopes = alibi_slopes.to(device=query.device, dtype=torch.float32)
    block = max(1, ALIBI_BLOCK_ENTRIES // (num_heads * kv_length))
    if dropout > 0.0:  # dropout masks cannot be replayed by the recomputing backward: checkpoint each block instead
        from torch.utils.checkpoint import checkpoint

        offset = kv_length - query_length
        outputs = [checkpoint(_alibi_causal_block, query[:, :, s:s + block], key[:, :, : offset + s + block],
                              value[:, :, : offset + s + block], slopes, offset + s, scaling, dropout,
                              use_reentrant=False) for s in range(0, query_length, block)]
        output = torch.cat(outputs, dim=2)
    else:
        output = _AlibiBlockwiseAttention.apply(query, key, value, slopes, scaling, block)
    return output.transpose(1, 2).contiguous(), None  # [batch, seq, heads, dim]


def alibi_slopes_attention_forward(module: nn.Module, *args, **kwargs) -> tuple[torch.Tensor, None]:
    """ALiBi given as per-head slopes: flash-attn's kernel under flash implementations, else the blockwise path."""
    if is_flash_attention(module.config._attn_implementation):
        return alibi_flash_attention_forward(module, *args, **kwargs)
    return alibi_blockwise_attention_forward(module, *args, **kwargs)


def is_flash_attention(attn_implementation: str | None) -> bool:
    return attn_implementation is not None and "flash" in attn_implementation


__all__ = [
    "SmallLLMAlibi",
    "add_bias_to_mask",
    "alibi_blockwise_attention_forward",
    "alibi_flash_attention_forward",
    "alibi_slopes",
    "alibi_slopes_attention_forward",
    "eager_attention_forward",
    "is_flash_attention",
    "repeat_kv",
    "wants_blockwise_alibi",
]
