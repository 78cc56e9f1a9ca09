"""The one modeling core behind every hf_smallllm family.

A pre-norm decoder-only transformer that reads like transformers' `modeling_llama.py`; every difference between
the families is a config field:

- attention: multi-head or grouped-query, optional q/k/v and output biases, softmax scale 1/sqrt(d) or 1/d (muP);
- positions: RoPE (`rope_parameters` through transformers' rope utilities, partial rotary, "half" or "interleaved"
  pair layout) or ALiBi (see `attention_smallllm.py`);
- norms: RMSNorm or LayerNorm with bias; MLP: gated (SwiGLU with silu) with optional biases;
- embeddings tied or untied, embedding and output-logit multipliers (muP).

`SmallLLMModel.forward` computes once what every layer's attention needs (the mask from `create_causal_mask`,
flash-attn's packed-document boundaries, RoPE's cos/sin or what ALiBi's slopes give the attention implementation
in use) and the layers dispatch through `attention_smallllm.ATTENTION_FUNCTIONS`, where the ALiBi-aware variants
of the backends live. Config values are read where they are used; nothing is cached on modules between calls.

Packed sequences: a training forward whose `position_ids` restart per document (or that carries `cu_seq_lens_*`)
attends only within each document, for every attention implementation and for several packed rows per batch.

This file ships to the Hub as remote code: it imports only torch, transformers and its siblings.
"""

from collections.abc import Callable

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask, find_packed_sequence_indices
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import PreTrainedModel, slice_logits_to_keep
from transformers.utils import can_return_tuple, logging
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .attention_smallllm import (
    ATTENTION_FUNCTIONS,
    SmallLLMAlibi,
    alibi_slopes,
    eager_attention_forward,
    is_flash_attention,
    wants_blockwise_alibi,
)
from .configuration_smallllm import SmallLLMConfig
from .init_smallllm import init_lit_gpt_weights
from .loss_smallllm import chunked_causal_lm_loss
from .mup_smallllm import init_mup_weights, mup_param_groups
from .peft_smallllm import install_peft_defaults

logger = logging.get_logger(__name__)


# ------------------------------------------------------------------------------------------------------------ norms
class SmallLLMRMSNorm(nn.Module):
    """RMSNorm computed in float32, identical to LlamaRMSNorm (so Llama exports are bit-compatible)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class SmallLLMLayerNorm(nn.LayerNorm):
    """LayerNorm with weight and bias (BTLM, GPT-2 style)."""


def build_norm(config: SmallLLMConfig) -> nn.Module:
    if config.norm_type == "layernorm":
        return SmallLLMLayerNorm(config.hidden_size, eps=config.norm_eps)
    return SmallLLMRMSNorm(config.hidden_size, eps=config.norm_eps)


# ------------------------------------------------------------------------------------------------------------- RoPE
class SmallLLMRotaryEmbedding(nn.Module):
    """cos/sin tables for the rotated part of each head, built once per forward and already laid out for the
    configured pair layout, so the per-layer work is two multiplies and a rotation."""

    def __init__(self, config: SmallLLMConfig):
        super().__init__()
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings
        self.config = config
        self.interleaved = config.rope_layout == "interleaved"

        self.rope_type = config.rope_settings["rope_type"]
        rope_init_fn: Callable = self.compute_default_rope_parameters
        if self.rope_type != "default":
            rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        inv_freq, self.attention_scaling = rope_init_fn(config)

        self.inv_freq = nn.Buffer(inv_freq, persistent=False)
        self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(config: SmallLLMConfig, device=None, **kwargs) -> tuple[torch.Tensor, float]:
        """Unscaled RoPE frequencies over the rotary dimensions (head_dim x partial_rotary_factor)."""
        base = config.rope_settings["rope_theta"]
        dim = config.rotary_dim
        exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim
        inv_freq = 1.0 / (base**exponents)
        return inv_freq, 1.0

    @torch.no_grad()
    @dynamic_rope_update  # recomputes inv_freq for dynamic/longrope scaling
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)  # [b, s, r/2]
        if self.interleaved:  # pairs (2i, 2i+1) share frequency i
            emb = freqs.repeat_interleave(2, dim=-1)
        else:  # pairs (i, i + r/2) share frequency i
            emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dimension."""
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def rotate_interleaved(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): rotation of adjacent pairs."""
    x1 = x[..., 0::2]
    x2 = x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate the first `cos.shape[-1]` dimensions of each head of q and k ([batch, heads, seq, head_dim]); the
    remaining dimensions (partial rotary) pass through unchanged."""
    cos = cos.unsqueeze(1)
    sin = sin.unsqueeze(1)
    rotate = rotate_interleaved if interleaved else rotate_half
    rotary_dim = cos.shape[-1]
    if rotary_dim == q.shape[-1]:
        return (q * cos) + (rotate(q) * sin), (k * cos) + (rotate(k) * sin)
    q_rot, q_pass = q[..., :rotary_dim], q[..., rotary_dim:]
    k_rot, k_pass = k[..., :rotary_dim], k[..., rotary_dim:]
    q_embed = torch.cat(((q_rot * cos) + (rotate(q_rot) * sin), q_pass), dim=-1)
    k_embed = torch.cat(((k_rot * cos) + (rotate(k_rot) * sin), k_pass), dim=-1)
    return q_embed, k_embed


# -------------------------------------------------------------------------------------------------- blocks
class SmallLLMMLP(nn.Module):
    """Gated MLP: down(act(gate(x)) * up(x)). The gate is the branch that goes through the activation (BTLM's
    `c_fc2`, ChatGLM's first half of `dense_h_to_4h`, lit-gpt's `w1`)."""

    def __init__(self, config: SmallLLMConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class SmallLLMAttention(nn.Module):
    """Multi-head / grouped-query self-attention dispatched through transformers' attention interface."""

    def __init__(self, config: SmallLLMConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.resolved_head_dim
        kv_heads = config.num_key_value_heads or config.num_attention_heads  # None: multi-head, as __post_init__ says
        self.num_key_value_groups = config.num_attention_heads // kv_heads
        self.scaling = config.attention_scaling
        self.attention_dropout = config.attention_dropout
        self.rope_interleaved = config.rope_layout == "interleaved"
        self.is_causal = True

        q_size = config.num_attention_heads * self.head_dim
        kv_size = kv_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, q_size, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_size, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_size, bias=config.attention_bias)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=config.attention_out_bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        # [batch, seq, hidden] -> [batch, heads, seq, head_dim]
        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        if position_embeddings is not None:  # RoPE; ALiBi arrives in the mask or the kwargs instead
            cos, sin = position_embeddings
            query_states, key_states = apply_rotary_pos_emb(
                query_states, key_states, cos, sin, interleaved=self.rope_interleaved
            )

        if cache is not None:
            key_states, value_states = cache.update(key_states, value_states, self.layer_idx, kwargs=kwargs)

        attention_interface: Callable = ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )

        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )

        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        attn_output = self.o_proj(attn_output)
        return attn_output, attn_weights


class SmallLLMDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: SmallLLMConfig, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = SmallLLMAttention(config=config, layer_idx=layer_idx)
        self.mlp = SmallLLMMLP(config)
        self.input_layernorm = build_norm(config)
        self.post_attention_layernorm = build_norm(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, _ = self.self_attn(
            hidden_states=hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            position_embeddings=position_embeddings,
            **kwargs,
        )
        hidden_states = residual + hidden_states

        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        return residual + hidden_states


# ---------------------------------------------------------------------------------------------- packed sequences
def position_ids_from_cu_seq_lens(cu_seq_lens: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Positions restarting at 0 at every boundary of `cu_seq_lens` ([0, end_1, end_2, ..., total]), as [batch, seq]."""
    cu_seq_lens = cu_seq_lens.to(torch.long)
    lengths = cu_seq_lens[1:] - cu_seq_lens[:-1]
    starts = torch.repeat_interleave(cu_seq_lens[:-1], lengths)
    positions = torch.arange(int(cu_seq_lens[-1]), device=cu_seq_lens.device) - starts
    return positions.view(shape)


def packed_flash_kwargs(position_ids: torch.Tensor, attention_mask, past_seen_tokens) -> dict:
    """`flash_varlen_kwargs_from_position_ids` for an uncached, unpadded forward over packed documents; {} for
    anything else."""
    if (
        position_ids.shape[1] > 1  # (a Python int first: a static cache's `past_seen_tokens` is a tensor)
        and attention_mask is None
        and past_seen_tokens == 0
        and find_packed_sequence_indices(position_ids) is not None
    ):
        return flash_varlen_kwargs_from_position_ids(position_ids)
    return {}


def flash_varlen_kwargs_from_position_ids(position_ids: torch.Tensor) -> dict:
    """cu_seq_lens / max_length for flash-attn's varlen kernel from per-document positions [batch, seq], flattened
    over the batch. A document starts where the position does not continue the previous one, and at every row start
    (transformers' own flash path only infers documents at batch size 1)."""
    batch_size, seq_len = position_ids.shape
    flat = position_ids.reshape(-1)
    starts = torch.ones_like(flat, dtype=torch.bool)
    starts[1:] = flat[1:] != flat[:-1] + 1
    starts[::seq_len] = True
    boundaries = torch.nonzero(starts).flatten()
    total = torch.tensor([flat.numel()], device=flat.device)
    cu_seq_lens = torch.cat([boundaries, total]).to(torch.int32)
    max_length = int((cu_seq_lens[1:] - cu_seq_lens[:-1]).max())
    return {
        "cu_seq_lens_q": cu_seq_lens,
        "cu_seq_lens_k": cu_seq_lens,
        "max_length_q": max_length,
        "max_length_k": max_length,
    }


# -------------------------------------------------------------------------------------------------- models
class SmallLLMPreTrainedModel(PreTrainedModel):
    config: SmallLLMConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SmallLLMDecoderLayer"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _can_compile_fullgraph = True
    _supports_attention_backend = True
    _can_record_outputs = {
        "hidden_states": SmallLLMDecoderLayer,
        "attentions": SmallLLMAttention,
    }
    # ChatGLM-layout checkpoints store the RoPE table, which is derived here, not learned.
    _keys_to_ignore_on_load_unexpected = [r"rotary_pos_emb\.inv_freq"]
    # ALiBi slopes are stored when a checkpoint has them (BTLM's do) and computed when it has not.
    _keys_to_ignore_on_load_missing = [r"alibi\.slopes"]

    def __init__(self, config: SmallLLMConfig, *inputs, **kwargs):
        super().__init__(config, *inputs, **kwargs)
        # PEFT's default LoRA targets for the smallllm_* model types. `import hf_smallllm` installs them; a folder
        # loaded as remote code has no such import, so building a model does it (idempotent, never imports peft).
        install_peft_defaults()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # muP scales the init of each matrix by its width multiplier (mup_smallllm.py); `init_scheme="lit_gpt"` is
        # TinyLlama's pretraining init (init_smallllm.py); everything else keeps transformers' default.
        if self.config.uses_mup:
            handled = init_mup_weights(self, module)
        else:
            handled = self.config.init_scheme == "lit_gpt" and init_lit_gpt_weights(self, module)
        if not handled:
            super()._init_weights(module)
        if isinstance(module, SmallLLMAlibi):
            init.copy_(module.slopes, alibi_slopes(self.config.num_attention_heads).view(-1, 1))

    def get_mup_param_groups(self, lr: float, weight_decay: float = 0.0) -> list[dict]:
        """muP optimizer groups (see `mup_smallllm.py`): hidden matrices at lr / width multiplier, the MLP output at
        lr / MLP multiplier, embeddings, norms and biases at lr; no weight decay on norms and biases."""
        return mup_param_groups(self, lr, weight_decay)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save in the package's own layout. transformers would otherwise write back the layout a checkpoint was
        converted from (e.g. BTLM's GPT-2 tensors) next to a config.json in ours.

        A class registered for an Auto class (hf_smallllm registers every family; transformers does it for classes
        loaded as remote code) also writes its module files and an `auto_map` (transformers' `custom_object_save`),
        so the folder loads with `trust_remote_code=True` where hf_smallllm is not installed. transformers names only
        the saved class there; the map is completed with the config and both model classes of this module."""
        if self._auto_class is not None:
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **remote_code_auto_map(self)}
        kwargs.setdefault("save_original_format", False)
        return super().save_pretrained(save_directory, *args, **kwargs)


class SmallLLMModel(SmallLLMPreTrainedModel):
    """The decoder stack without the output head: embeddings, blocks, final norm."""

    def __init__(self, config: SmallLLMConfig):
        super().__init__(config)
        self.vocab_size = config.vocab_size
        # No `padding_idx`: ChuXin pads with its EOS token, whose embedding must keep learning.
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            [SmallLLMDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = build_norm(config)
        # positions: RoPE's cos/sin tables, or ALiBi's slopes
        self.rotary_emb: SmallLLMRotaryEmbedding | None
        self.alibi: SmallLLMAlibi | None
        if config.position_embedding_type == "rope":
            self.rotary_emb = SmallLLMRotaryEmbedding(config=config)
            self.alibi = None
        else:
            self.rotary_emb = None
            self.alibi = SmallLLMAlibi(config)
        self.gradient_checkpointing = False
        self.post_init()

    # transformers 5.24 renamed `past_key_values` to `cache`; callers of the old name still work, with a warning
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if self.config.mup_embeddings_scale != 1.0:  # muP's input multiplier
            inputs_embeds = inputs_embeds * self.config.mup_embeddings_scale
        batch_size, query_length = inputs_embeds.shape[:2]

        past_seen_tokens = cache.get_seq_length() if cache is not None else 0
        kv_length = cache.get_mask_sizes(query_length, 0)[0] if cache is not None else query_length
        # Positions made here from `arange` hold one document per row: nothing for the mask to detect.
        may_be_packed = position_ids is not None or kwargs.get("cu_seq_lens_q") is not None
        if position_ids is None:
            if kwargs.get("cu_seq_lens_q") is not None:  # packed documents given as boundaries only
                position_ids = position_ids_from_cu_seq_lens(kwargs["cu_seq_lens_q"], inputs_embeds.shape[:2])
            else:
                position_ids = torch.arange(query_length, device=inputs_embeds.device) + past_seen_tokens
                position_ids = position_ids.unsqueeze(0)

        # The mask is built from the caller's cache, before a fresh one is created below: an empty cache adds nothing
        # to it, but its mere presence stops transformers from detecting packed documents in `position_ids`.
        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids if may_be_packed else None,
            # ALiBi folds its bias into a materialised mask, except on the long rows sdpa attends block by block
            allow_is_causal_skip=self.alibi is None or wants_blockwise_alibi(query_length, kv_length),
        )
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)

        # flash-attn's varlen kernel takes packed documents as boundaries; transformers finds them at batch size 1 only
        if is_flash_attention(self.config._attn_implementation) and may_be_packed and "cu_seq_lens_q" not in kwargs:
            kwargs.update(packed_flash_kwargs(position_ids.expand(batch_size, -1), attention_mask, past_seen_tokens))

        position_embeddings = None
        if self.alibi is not None:  # what this attention implementation needs for ALiBi, once for every layer
            causal_mask, alibi_kwargs = self.alibi(inputs_embeds, causal_mask, past_seen_tokens, kv_length)
            kwargs.update(alibi_kwargs)
        elif self.rotary_emb is not None:
            position_embeddings = self.rotary_emb(inputs_embeds, position_ids=position_ids)

        hidden_states = inputs_embeds
        for decoder_layer in self.layers[: self.config.num_hidden_layers]:
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=causal_mask,
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                **kwargs,
            )

        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, cache=cache)


class SmallLLMForCausalLM(SmallLLMPreTrainedModel, GenerationMixin):
    """Decoder stack plus output head; logits are multiplied by the muP output multiplier when it is not 1."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    # transformers annotates this as {name: (str, str)} but its own models, and its pipeline code, use lists
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}  # type: ignore[dict-item]
    # The class of `self.model`; each family points it at its own `...Model`.
    base_model_class: type[SmallLLMModel] = SmallLLMModel

    def __init__(self, config: SmallLLMConfig):
        super().__init__(config)
        self.model = self.base_model_class(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Token ids to predict (shifted inside the loss); -100 marks positions without loss. Pass
            `num_items_in_batch` to normalise by the token count of a whole accumulated batch.
        logits_to_keep (`int` or `torch.Tensor`, *optional*):
            Compute logits only for the last `logits_to_keep` positions (0 = all), or for the given indices.
        """
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )

        assert outputs.last_hidden_state is not None  # SmallLLMModel always returns it
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits_multiplier = self.config.output_logits_multiplier  # muP: alpha / width multiplier, else 1
        if labels is not None and self.config.loss_chunk_size:  # long rows: never hold [tokens, vocab] logits whole
            chunked_loss = chunked_causal_lm_loss(
                hidden_states, self.lm_head, labels, self.config.loss_chunk_size,
                logits_multiplier=logits_multiplier,
                num_items_in_batch=kwargs.get("num_items_in_batch"), shift_labels=kwargs.get("shift_labels"),
            )
            return CausalLMOutputWithPast(loss=chunked_loss, cache=outputs.cache,
                                          hidden_states=outputs.hidden_states, attentions=outputs.attentions)
        logits = self.lm_head(hidden_states)
        if logits_multiplier != 1.0:
            logits = logits * logits_multiplier

        loss: torch.Tensor | None = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)

        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


def remote_code_auto_map(model: SmallLLMPreTrainedModel) -> dict[str, str]:
    """`auto_map` entries ("module.Class", the form transformers resolves inside a saved folder) for a model's config
    class and its model classes: a causal LM names its base model class too (both live in the family's module)."""

    def reference(cls: type) -> str:
        return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"

    entries = {"AutoConfig": reference(type(model.config))}
    if isinstance(model, SmallLLMForCausalLM):
        entries["AutoModel"] = reference(type(model).base_model_class)
        entries["AutoModelForCausalLM"] = reference(type(model))
    else:
        entries["AutoModel"] = reference(type(model))
    return entries


__all__ = [
    "SmallLLMForCausalLM",
    "SmallLLMModel",
    "SmallLLMPreTrainedModel",
    "apply_rotary_pos_emb",
    "flash_varlen_kwargs_from_position_ids",
    "packed_flash_kwargs",
    "position_ids_from_cu_seq_lens",
    "remote_code_auto_map",
]
