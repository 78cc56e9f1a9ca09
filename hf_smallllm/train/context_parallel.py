"""Context parallelism: one sequence split over several ranks, through DeepSpeed's Ulysses attention (ALST).

Why Ulysses (measured, docs/long_context.md "Context parallelism"): torch's ring attention
(`torch.distributed.tensor.experimental.context_parallel`, which accelerate 1.16's `ParallelismConfig(cp_size=...)`
drives) does not run on CPU processes at all and takes only an unmasked causal `scaled_dot_product_attention`, so
packed documents and ALiBi could not go through it; DeepSpeed's `UlyssesSPAttentionHF` runs on gloo and, because
each rank attends over the *whole* sequence for a slice of the heads, every attention feature of the package works
under it once the mask is rebuilt for the whole sequence.

How a step runs with `training.context_parallel: P` on `W` processes (`W / P` data-parallel groups of `P` ranks):

1. The `P` ranks of a group read the same rows (the data stream is built for `W / P` processes) and each keeps one
   contiguous slice of every row (`shard_batch`): `input_ids`, the global `position_ids` (so RoPE rotates each token
   by its true position, and document restarts survive), and `shift_labels`, the labels shifted over the *whole* row
   before the cut, so the target of a slice's last token is the next slice's first token. Precomputed flash-attn
   boundaries (`cu_seq_lens_*`) describe whole rows and are dropped.
2. Each layer computes q, k, v and RoPE on its slice; Ulysses' all-to-all turns [slice, all heads] into
   [whole sequence, heads / P]; `UlyssesAttention.core_attention` attends with the mask of the whole sequence, built
   here from the gathered positions (causal, and block-diagonal over packed documents; ALiBi slopes cut to the
   rank's heads); a second all-to-all returns [slice, all heads].
3. The loss of a slice is its summed cross-entropy over the target count of the whole global batch (the engine
   counts targets on the slices, `count_targets`), and gradients are summed over all `W` ranks as in data
   parallelism: the same numbers as the unsplit row (`tests/train/test_context_parallel.py`: loss and gradients
   within 1e-5 on 2 and 4 gloo ranks).

A recipe's stages may use different sizes (`long-chuxin`: whole 32K and 128K rows, 1M rows over 8 GPUs). A
`StageAttention` holds one Ulysses attention per size, each over its own cached groups (`sequence_parallel_group`),
all checked and created before step 1; the engine calls `use(size)` at every step, which routes the model's attention
through the size's Ulysses or, for 1, back to the model's own attention, from the first step of a stage on (a resumed
run included).

What it refuses, in one line each (`context_parallel_refusal`): head counts that `P` does not divide (Ulysses shares
out heads), position schemes whose numbers depend on the length a rank sees (`dynamic` / `longrope` RoPE, dynamic
ALiBi interpolation), and flex attention (its block mask would have to be rebuilt per shard).
"""

from __future__ import annotations

import torch

from ..errors import UsageValueError
from ..models.attention_smallllm import (
    ATTENTION_FUNCTIONS,
    add_bias_to_mask,
    alibi_bias,
    eager_attention_forward,
    is_flash_attention,
)
from ..models.modeling_smallllm import flash_varlen_kwargs_from_position_ids

ENGINES = ("deepspeed-ulysses",)
# The attention implementation name a context-parallel model runs under. Unknown to transformers' mask registry, so
# `create_causal_mask` builds no (per-slice, wrong) mask; containing no "flash", so the model computes no per-slice
# flash boundaries either: the whole-sequence mask is built once per layer call after the all-to-all.
ATTENTION_NAME = "hf_smallllm_context_parallel"
IGNORE_INDEX = -100
# Keys of a packed batch that describe whole rows and are recomputed from the gathered positions.
WHOLE_ROW_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


class ContextParallelError(UsageValueError):
    """A model, attention setting or layout that context parallelism cannot run, named in one line."""


# ------------------------------------------------------------------------------------------------ what runs
def context_parallel_refusal(config, size: int) -> str | None:
    """Why `config` cannot run with its sequences split over `size` ranks, in one line naming the feature, or None."""
    if size == 1:
        return None
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    if heads % size:
        return (f"context parallelism {size}: {heads} attention heads are not divisible by {size} (Ulysses gives each "
                "rank heads / size heads); choose a size that divides the head count")
    if kv_heads % size and size % kv_heads:
        return (f"context parallelism {size}: {kv_heads} key/value heads neither divide nor are divided by {size}")
    if config._attn_implementation not in (None, "eager", "sdpa") and not is_flash_attention(
            config._attn_implementation):
        return (f"context parallelism: attn_implementation={config._attn_implementation!r} is not supported (its "
                "mask would be built for one slice); use sdpa or flash_attention_2")
    if config.position_embedding_type == "rope":
        rope_type = config.rope_parameters.get("rope_type", "default")
        if rope_type in ("dynamic", "longrope"):
            return (f"context parallelism: rope_type={rope_type!r} rescales by the length each rank sees, which "
                    "differs per slice; use a fixed scaling (default with a raised rope_theta, linear, yarn, llama3)")
    elif (config.alibi_scaling or {}).get("train_seq_len") is not None:
        return ("context parallelism: dynamic ALiBi interpolation (alibi_scaling.train_seq_len) scales by the length "
                "each rank sees, which differs per slice; use a fixed factor (alibi_scaling.factor)")
    return None


def check_context_parallel(config, size: int, world_size: int, seq_lens=()) -> None:
    """Raise `ContextParallelError` (one line) unless `size` ranks per sequence can run this model and layout."""
    if size < 1:
        raise ContextParallelError(f"training.context_parallel={size} must be at least 1")
    if world_size % size:
        raise ContextParallelError(f"training.context_parallel={size} does not divide the {world_size} process(es); "
                                   f"launch a multiple of {size}")
    for seq_len in seq_lens:
        if seq_len % size:
            raise ContextParallelError(f"training.context_parallel={size} does not divide the row length {seq_len}")
    refusal = context_parallel_refusal(config, size)
    if refusal:
        raise ContextParallelError(refusal)


# ------------------------------------------------------------------------------------------------ the batch
def shard_batch(batch: dict, rank: int, size: int) -> dict:
    """This rank's contiguous slice of every row of a packed batch (see the module docstring, step 1): input_ids,
    global position_ids, labels and `shift_labels` (labels shifted over the whole row, then cut)."""
    input_ids = batch["input_ids"]
    rows, length = input_ids.shape
    if length % size:
        raise ContextParallelError(f"context parallelism {size} does not divide the row length {length}")
    position_ids = batch.get("position_ids")
    if position_ids is None:
        position_ids = torch.arange(length, device=input_ids.device).expand(rows, -1)
    shift_labels = batch.get("shift_labels")
    if shift_labels is None:
        shift_labels = torch.nn.functional.pad(batch["labels"], (0, 1), value=IGNORE_INDEX)[:, 1:]
    mask = batch.get("attention_mask")
    if mask is not None and not bool(mask.all()):
        raise ContextParallelError("context parallelism takes packed rows without padding; this batch has an "
                                   "attention_mask with padded positions")
    part = length // size
    cut = slice(rank * part, (rank + 1) * part)
    sharded = {k: v for k, v in batch.items() if k not in WHOLE_ROW_KEYS and k != "attention_mask"}
    sharded.update(input_ids=input_ids[:, cut], position_ids=position_ids[:, cut].contiguous(),
                   shift_labels=shift_labels[:, cut].contiguous())
    if "labels" in batch:  # the model computes a loss only when labels are given; the targets are shift_labels
        sharded["labels"] = batch["labels"][:, cut]
    return sharded


def count_targets(batch: dict) -> int:
    """Target tokens of a batch: labels other than -100 after the shift (of a slice: its `shift_labels`)."""
    if "shift_labels" in batch:
        return int((batch["shift_labels"] != IGNORE_INDEX).sum())
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def document_causal_mask(position_ids: torch.Tensor) -> torch.Tensor:
    """bool [batch, 1, seq, seq], True = attend: causal, and only inside a document. A document starts at every row
    start and wherever a position does not continue the previous one (the rule of flash-attn's varlen boundaries)."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    document = starts.cumsum(-1)  # [batch, seq]
    index = torch.arange(position_ids.shape[-1], device=position_ids.device)
    causal = index[None, :] <= index[:, None]  # [q, kv]
    return ((document[:, :, None] == document[:, None, :]) & causal)[:, None]


def _is_packed(position_ids: torch.Tensor) -> bool:
    return bool((position_ids[:, 1:] != position_ids[:, :-1] + 1).any())


# ------------------------------------------------------------------------------------------------ the attention
class UlyssesAttention:
    """The attention function of a context-parallel model: DeepSpeed's `UlyssesSPAttentionHF` (the all-to-alls)
    around `core_attention` (the model's own attention implementation over the whole sequence, with the
    whole-sequence mask). One Ulysses module per micro-batch row count: the sequence-length schedule changes it."""

    def __init__(self, config, core: str, group, rank: int, size: int):
        self.config, self.core, self.group, self.rank, self.size = config, core, group, rank, size
        self._engines: dict[int, torch.nn.Module] = {}

    def _engine(self, rows: int):
        if rows not in self._engines:
            from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF

            config = self.config
            self._engines[rows] = UlyssesSPAttentionHF(
                attn=self.core_attention, batch_size=rows, attn_head_count=config.num_attention_heads,
                attn_head_size=config.head_dim, kv_head_count=config.num_key_value_heads,
                num_hidden_layers=config.num_hidden_layers, process_group=self.group, seq_length_is_variable=True)
        return self._engines[rows]

    def __call__(self, module, query, key, value, attention_mask, **kwargs):
        for name in WHOLE_ROW_KEYS:
            kwargs.pop(name, None)
        if not module.training:
            # evaluation and generation during a context-parallel run (a callback on one rank) see whole rows: no
            # all-to-all, all heads here (and the module's query heads per key/value head, which Ulysses rewrites
            # in training forwards when it replicates key/value heads)
            module.num_key_value_groups = self.config.num_attention_heads // self.config.num_key_value_heads
            if query.shape[-2] == key.shape[-2]:
                return self.core_attention(module, query, key, value, None, head_offset=0, **kwargs)
            function = ATTENTION_FUNCTIONS.get_interface(self.core, eager_attention_forward)
            return function(module, query, key, value, None, **kwargs)  # a cached step attends every key
        if "position_ids" not in kwargs:
            raise ContextParallelError("context parallelism needs position_ids in every forward (shard_batch "
                                       "adds them)")
        return self._engine(query.shape[0])(module, query, key, value, None, **kwargs)

    def core_attention(self, module, query, key, value, attention_mask, position_ids=None, alibi_slopes=None,
                       head_offset: int | None = None, **kwargs):
        """Attention over the whole sequence for this rank's heads ([batch, heads / P, seq, dim]), which start at
        head `head_offset` (default: the all-to-all gives rank r the heads r x heads/P ... (r + 1) x heads/P - 1);
        `position_ids` are the gathered ones ([batch, seq])."""
        local = query.shape[1]
        if alibi_slopes is not None:
            start = self.rank * local if head_offset is None else head_offset
            alibi_slopes = alibi_slopes[start:start + local]
        if position_ids is None:
            position_ids = torch.arange(query.shape[-2], device=query.device).expand(query.shape[0], -1)
        function = ATTENTION_FUNCTIONS.get_interface(self.core, eager_attention_forward)
        packed = _is_packed(position_ids)
        if is_flash_attention(self.core):
            if packed:
                kwargs.update(flash_varlen_kwargs_from_position_ids(position_ids))
            return function(module, query, key, value, None, alibi_slopes=alibi_slopes, position_ids=position_ids,
                            **kwargs)
        mask = None
        if packed or self.core == "eager":  # sdpa on one document per row attends causally without a mask
            allowed = document_causal_mask(position_ids)
            if alibi_slopes is not None:
                index = torch.arange(query.shape[-2], device=query.device)
                mask = add_bias_to_mask(allowed, alibi_bias(alibi_slopes, index, query.shape[-2], query.dtype),
                                        query.dtype)
                alibi_slopes = None
            elif self.core == "eager":
                mask = torch.zeros(allowed.shape, dtype=query.dtype, device=query.device).masked_fill(
                    ~allowed, torch.finfo(query.dtype).min)
            else:
                mask = allowed
        if alibi_slopes is not None:
            kwargs["alibi_slopes"] = alibi_slopes
        return function(module, query, key, value, mask, **kwargs)


_GROUPS: dict[int, tuple] = {}


def sequence_parallel_group(size: int):
    """(process group, rank in it) of this process: ranks `g x size ... (g + 1) x size - 1` share their sequences.
    Every rank creates every group, in the same order (`torch.distributed.new_group` requires it); cached."""
    import torch.distributed as dist

    if size not in _GROUPS:
        world, rank = dist.get_world_size(), dist.get_rank()
        mine = None
        for start in range(0, world, size):
            group = dist.new_group(list(range(start, start + size)))
            if start <= rank < start + size:
                mine = group
        _GROUPS[size] = (mine, rank % size)
    return _GROUPS[size]


def enable_context_parallel(model, size: int, seq_lens=()) -> UlyssesAttention | None:
    """Make `model` attend through Ulysses over groups of `size` ranks (a no-op for 1); checks first
    (`check_context_parallel`). Needs an initialised process group; returns the attention function installed."""
    import torch.distributed as dist

    if size == 1:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        raise ContextParallelError(f"training.context_parallel={size} needs {size} or more processes (torchrun, "
                                   "accelerate launch); this one runs alone")
    config = model.config
    check_context_parallel(config, size, dist.get_world_size(), seq_lens)
    try:
        from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF  # noqa: F401
    except ImportError as err:
        raise ContextParallelError(f"training.context_parallel needs DeepSpeed's Ulysses attention ({err}); "
                                   "pip install 'hf_smallllm[deepspeed]'") from err
    group, rank = sequence_parallel_group(size)
    return install_ulysses_attention(model, group, rank, size)


class StageAttention:
    """The attention of a run whose stages split rows over different numbers of ranks (see the module docstring):
    `use(size)` before a step routes `model`'s attention through Ulysses over this process's group of `size` ranks,
    or, for 1, through the model's own attention implementation."""

    def __init__(self, model, stages=()):
        """`stages`: (context-parallel size, row lengths) of each stage. Every size above 1 is checked
        (`check_context_parallel`, one line) and its group created here, in the same order on every rank; the model
        is left on its own attention."""
        config = model.config
        self.model, self.own, self.size = model, config._attn_implementation, 1
        self._ulysses: dict[int, UlyssesAttention] = {}
        for size in sorted({size for size, _ in stages if size > 1}):
            seq_lens = sorted({n for each, lens in stages if each == size for n in lens})
            self._ulysses[size] = enable_context_parallel(model, size, seq_lens)
            config._attn_implementation = self.own  # enable_context_parallel routed it: back until `use`

    @property
    def sizes(self) -> list[int]:
        return [1, *sorted(self._ulysses)]

    def use(self, size: int) -> None:
        """Attend with rows split over `size` ranks from now on (a no-op when that is already so)."""
        if size == self.size:
            return
        if size != 1 and size not in self._ulysses:
            raise ContextParallelError(f"context parallelism {size} was not prepared for this run (sizes "
                                       f"{self.sizes})")
        config = self.model.config
        if size == 1:
            config._attn_implementation = self.own
        else:
            ATTENTION_FUNCTIONS[ATTENTION_NAME] = self._ulysses[size]
            config._attn_implementation = ATTENTION_NAME
        # Ulysses rewrites the query heads per key/value head of every attention module when it replicates key/value
        # heads (size > key/value heads); the next size starts from the model's own count
        groups = config.num_attention_heads // config.num_key_value_heads
        for module in self.model.modules():
            if hasattr(module, "num_key_value_groups"):
                module.num_key_value_groups = groups
        self.size = size


def _init_deepspeed_comm(backend: str) -> None:
    """deepspeed.comm over the running torch process group. On CPU processes DeepSpeed would also JIT-build and load,
    in every rank at once, a shared-memory all-reduce kernel that Ulysses never calls (it exchanges with all-to-all
    and all-gather); that build is skipped, keeping a C++ compile out of the start of every CPU run."""
    import importlib

    import deepspeed.comm

    # the module, not the name `torch` that deepspeed.comm's namespace also binds to torch itself
    deepspeed_torch_backend = importlib.import_module("deepspeed.comm.torch")
    build = deepspeed_torch_backend.build_shm_op
    deepspeed_torch_backend.build_shm_op = lambda: None
    try:
        deepspeed.comm.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
    finally:
        deepspeed_torch_backend.build_shm_op = build


def install_ulysses_attention(model, group, rank: int, size: int) -> UlyssesAttention:
    """Route `model`'s attention through Ulysses over `group` (this process is `rank` of its `size` ranks), without
    the checks of `enable_context_parallel`; with a group of one it runs the same code path on one device (the GPU
    check does). The function is registered under `ATTENTION_NAME` in the package's attention registry, one per
    process: the last model installed owns it."""
    import deepspeed.comm
    import torch.distributed as dist

    if not deepspeed.comm.is_initialized():  # Ulysses talks through deepspeed.comm, which wraps torch's group
        _init_deepspeed_comm(dist.get_backend())
    config = model.config
    attention = UlyssesAttention(config, config._attn_implementation or "sdpa", group, rank, size)
    ATTENTION_FUNCTIONS[ATTENTION_NAME] = attention
    config._attn_implementation = ATTENTION_NAME
    return attention


__all__ = ["ATTENTION_NAME", "ENGINES", "ContextParallelError", "StageAttention", "UlyssesAttention",
           "check_context_parallel", "context_parallel_refusal", "count_targets", "document_causal_mask",
           "enable_context_parallel", "install_ulysses_attention", "sequence_parallel_group", "shard_batch"]
