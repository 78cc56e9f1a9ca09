"""Attention for hf_smallllm: the kernels, ALiBi, and the one registry the layers dispatch through.

- `ATTENTION_FUNCTIONS`: transformers' attention interface with the ALiBi-aware variants overridden locally, the one
  place where ALiBi meets each backend. What a forward pass hands its layers comes from `SmallLLMAlibi.forward`,
  computed once per pass from the mask transformers built:
  eager, and sdpa on short, padded or packed rows: the bias folded into the 4D mask (the stock kernels);
  sdpa on long unpadded rows: the slopes, attended query block by query block (`alibi_blockwise_attention_forward`);
  flex attention: the bias as `position_bias`, added in transformers' score_mod;
  flash-attn: the slopes, passed to flash-attn's kernel (`alibi_flash_attention_forward`: dense, padded or packed
  varlen), which transformers' stock flash path would drop silently.
- `eager_attention_forward`: the reference kernel behind `attn_implementation="eager"` (fp32 softmax, additive mask).
- ALiBi (Press et al., 2022): the standard geometric slopes, including the interleaved extension for head counts
  that are not powers of two, BTLM's position interpolation (`alibi_scaling`), and the bias `-slope_h * |i - j|`
  from token indices. Index distances equal position distances inside a document, so the same bias is right for
  left-padded batches (padding is masked) and for packed rows (cross-document pairs are masked). The slopes are a
  buffer that checkpoints store, as BTLM's `relative_pe.slopes` (the official forward uses the stored values).
- No state is kept on modules between calls: a decoding step folds its [heads, 1, kv] bias afresh.

This file ships to the Hub as remote code: it imports only torch, transformers and its siblings.
"""

import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface
from transformers.utils import logging

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

    from .modeling_smallllm import SmallLLMAttention  # the layer that calls these functions (annotations only)

logger = logging.get_logger(__name__)


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[batch, kv_heads, seq, dim] -> [batch, kv_heads * n_rep, seq, dim], each key/value head serving n_rep queries."""
    batch, num_key_value_heads, seq_len, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, seq_len, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, seq_len, head_dim)


def eager_attention_forward(
    module: "SmallLLMAttention",
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention. `attention_mask` is additive ([batch, 1 or heads, q, kv]) and carries any ALiBi bias;
    without a mask, `alibi_slopes` give the causal ALiBi bias (queries bottom-right aligned with the keys)."""
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)

    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask[..., : key_states.shape[-2]]
    elif alibi_slopes is not None:
        offset = key_states.shape[-2] - query.shape[-2]
        attn_weights = attn_weights + _alibi_causal_bias(alibi_slopes, offset, query.shape[-2], key_states.shape[-2],
                                                         query.device).to(attn_weights.dtype)

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


def alibi_bias(slopes: torch.Tensor, query_positions: torch.Tensor, kv_length: int, dtype: torch.dtype) -> torch.Tensor:
    """Bias [1, heads, q, kv] = -slope_h * |query index - key index| from flat `slopes` [heads]; `query_positions` are
    the queries' indices in the key sequence (past length + arange for a cached forward)."""
    key_positions = torch.arange(kv_length, device=query_positions.device)
    distance = (query_positions[:, None] - key_positions[None, :]).abs().to(torch.float32)  # [q, kv]
    slopes = slopes.to(device=query_positions.device, dtype=torch.float32)
    return (-slopes[:, None, None] * distance).unsqueeze(0).to(dtype)


def add_bias_to_mask(mask: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Fold an additive bias [1, heads, q, kv] into a mask [batch, 1, q, kv] that is either boolean (True = attend,
    sdpa) or additive float (0 = attend, eager). Returns one additive float mask [batch, heads, q, kv] for every layer.
    Masked entries get the dtype's minimum, not -inf, so fully masked padding rows stay finite."""
    allowed = mask if mask.dtype == torch.bool else mask == 0
    return torch.where(allowed, bias.to(dtype), torch.finfo(dtype).min)


class SmallLLMAlibi(nn.Module):
    """ALiBi's per-head slopes (stored, as BTLM checkpoints store them) and what the attention layers of one forward
    pass need from them, computed once for all layers (`forward`).

    `slopes` is a [heads, 1] buffer, the shape of BTLM's `relative_pe.slopes`: a checkpoint that stores slopes
    (rounded to bf16, say) is used as stored, one that does not gets the standard slopes (`_init_weights`)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.slopes = nn.Buffer(alibi_slopes(config.num_attention_heads).view(-1, 1))

    def scaled_slopes(self, attended_length: int | torch.Tensor) -> torch.Tensor:
        """Slopes after position interpolation (`alibi_scaling`): divided by a fixed `factor`, or (dynamic) by
        `attended_length / train_seq_len` once the attended length (cache included) exceeds the training length.
        `attended_length` is a tensor under a static cache, so the dynamic case stays a tensor operation."""
        scaling = self.config.alibi_scaling
        if scaling is None:
            return self.slopes
        if "factor" in scaling:
            return self.slopes / float(scaling["factor"])
        ratio = attended_length / scaling["train_seq_len"]
        if isinstance(ratio, torch.Tensor):
            return self.slopes / ratio.clamp(min=1.0).to(self.slopes.dtype)
        return self.slopes / ratio if ratio > 1.0 else self.slopes

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: "torch.Tensor | BlockMask | None",
        past_length: int | torch.Tensor,
        kv_length: int,
    ) -> tuple["torch.Tensor | BlockMask | None", dict]:
        """(attention mask, attention kwargs) for every layer of one forward pass, in the form the mask came in:

        - a 4D mask (eager; sdpa on short, padded or packed rows, and on a static cache): the bias folded into it,
          one additive mask [batch, heads, q, kv] and nothing else;
        - a flex `BlockMask`: the bias as `position_bias`, which transformers' flex attention adds in its score_mod;
        - no mask (sdpa's long unpadded rows, see `wants_blockwise_alibi`) or flash-attn's 2D padding mask: the
          slopes as `alibi_slopes` [heads], from which the kernel adds the bias itself (`ATTENTION_FUNCTIONS`).

        The queries sit at key indices `past_length`.. (a tensor under a static cache) of `kv_length` keys."""
        query_length = inputs_embeds.shape[1]
        slopes = self.scaled_slopes(past_length + query_length).view(-1)
        if attention_mask is None or (isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2):
            return attention_mask, {"alibi_slopes": slopes}
        query_positions = torch.arange(query_length, device=inputs_embeds.device) + past_length
        bias = alibi_bias(slopes, query_positions, kv_length, inputs_embeds.dtype)
        if isinstance(attention_mask, torch.Tensor):
            return add_bias_to_mask(attention_mask, bias, inputs_embeds.dtype), {}
        return attention_mask, {"position_bias": bias.expand(inputs_embeds.shape[0], -1, -1, -1)}


def alibi_flash_attention_forward(
    module: "SmallLLMAttention",
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


def _alibi_causal_bias(slopes, query_start, query_length: int, kv_length: int, device) -> torch.Tensor:
    """fp32 [heads, q, kv]: the ALiBi bias of queries at key indices `query_start`.. over keys 0..kv_length - 1, with
    the float32 minimum on keys after the query (causal)."""
    query_positions = torch.arange(query_length, device=device) + query_start
    key_positions = torch.arange(kv_length, device=device)
    distance = (query_positions[:, None] - key_positions[None, :]).to(torch.float32)  # >= 0 where attended
    slopes = slopes.to(device=device, dtype=torch.float32)
    return (-slopes[:, None, None] * distance.abs()).masked_fill(distance < 0, torch.finfo(torch.float32).min)


def _alibi_causal_block(query, key, value, slopes, query_start: int, scaling: float, dropout: float):
    """sdpa over one block of queries starting at key index `query_start`, with the ALiBi bias and the causal mask
    of that block only ([heads, block, keys]); `key`/`value` end at the block's last query."""
    bias = _alibi_causal_bias(slopes, query_start, query.shape[-2], key.shape[-2], query.device)
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
    module: "SmallLLMAttention",
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
    if alibi_slopes is None:
        raise ValueError("the blockwise ALiBi path needs alibi_slopes")
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


# ------------------------------------------------------------------------------------ the attention implementations
def sdpa_attention_forward(
    module: "SmallLLMAttention", query, key, value, attention_mask, alibi_slopes: torch.Tensor | None = None, **kwargs
) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention; ALiBi given as slopes (a long unpadded row, no mask) goes block by block."""
    if alibi_slopes is not None:
        return alibi_blockwise_attention_forward(module, query, key, value, attention_mask, alibi_slopes=alibi_slopes,
                                                 **kwargs)
    return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, **kwargs)


def flash_attention_forward(
    module: "SmallLLMAttention", query, key, value, attention_mask, alibi_slopes: torch.Tensor | None = None, **kwargs
) -> tuple[torch.Tensor, None]:
    """transformers' flash-attn path; with ALiBi slopes, which it would drop, `alibi_flash_attention_forward`."""
    if alibi_slopes is not None:
        return alibi_flash_attention_forward(module, query, key, value, attention_mask, alibi_slopes=alibi_slopes,
                                             **kwargs)
    stock = ALL_ATTENTION_FUNCTIONS.get_interface(module.config._attn_implementation, eager_attention_forward)
    return stock(module, query, key, value, attention_mask, **kwargs)


def is_flash_attention(attn_implementation: str | None) -> bool:
    return attn_implementation is not None and "flash" in attn_implementation


class SmallLLMAttentionInterface(AttentionInterface):
    """transformers' attention registry (a user's `AttentionInterface.register` reaches our layers too) with the
    implementations that take ALiBi as slopes overridden locally, as transformers' own models override one: sdpa
    (`sdpa_attention_forward`) and every flash-attn implementation, hub kernels included
    (`flash_attention_forward`)."""

    def get_interface(self, attn_implementation: str, default):
        if is_flash_attention(attn_implementation):
            return flash_attention_forward
        return super().get_interface(attn_implementation, default)


# The attention functions of hf_smallllm's layers. How each implementation receives ALiBi (a bias folded into an
# eager/sdpa mask, a flex `position_bias`, slopes for flash-attn and for sdpa's blockwise path) is decided once per
# forward pass by `SmallLLMAlibi.forward`; the functions only read what they are handed.
ATTENTION_FUNCTIONS = SmallLLMAttentionInterface()
ATTENTION_FUNCTIONS["sdpa"] = sdpa_attention_forward


__all__ = [
    "ATTENTION_FUNCTIONS",
    "SmallLLMAlibi",
    "SmallLLMAttentionInterface",
    "add_bias_to_mask",
    "alibi_bias",
    "alibi_blockwise_attention_forward",
    "alibi_flash_attention_forward",
    "alibi_slopes",
    "eager_attention_forward",
    "is_flash_attention",
    "repeat_kv",
    "wants_blockwise_alibi",
]
