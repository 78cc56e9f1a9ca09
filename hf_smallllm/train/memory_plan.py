"""Memory per GPU of a long-context training step, from a model config and a layout, and the smallest cluster that
fits each stage of a long-context recipe (docs/long_context.md "Memory plan" is printed by `hf-smallllm longctx
memory-plan`).

The layout is the one this package trains with at length: FSDP2 over all GPUs (fp32 master weights, fp32 gradients
and AdamW's two fp32 moments, all sharded; bf16 compute), activation checkpointing at every decoder layer, chunked
cross-entropy (`loss_chunk_size`), flash-style attention (no [seq, seq] tensor) and context parallelism over
`context_parallel` GPUs (DeepSpeed Ulysses, train/context_parallel.py), so a GPU holds `rows x seq_len /
context_parallel` tokens. The terms, per GPU, in bytes (t = local tokens, h = hidden, I = MLP width, L = layers, V =
vocabulary, c = compute bytes, W = GPUs):

- weights, gradients, optimizer: 4P/W, 4P/W, 8P/W (P parameters; one sharded fp32 copy each);
- gathered: the largest FSDP unit gathered in compute precision with its gradient before the reduce-scatter (one
  decoder layer, plus the prefetched next one; the root unit with embeddings and head when it is larger);
- checkpoints: the input of every layer, L x t x h x c;
- layer recompute: one layer's activations rebuilt in its backward, t x c(9h + 4I) (two norm outputs, q, k, v, the
  rotated q and k, the attention output, the residual; gate, up, their activation and product), plus the two fp32
  RMSNorm upcasts when c < 4 (t x 8h), plus the activation gradients live at the MLP's backward, t x c(h + 2I);
- attention workspace: Ulysses' all-to-all buffers (q, k, v and the output, sent and received) and the kernel's
  fp32 log-sum-exp and query-gradient accumulator, t x (8 x heads x head_dim x c + 4 x heads + 4 x heads x head_dim);
- loss chunk: one chunk of logits with their fp32 copy, softmax and gradient, C x V x (c + 12) (c = 4: C x V x 12),
  plus the final hidden states, t x h x (c + 4);
- reserved: CUDA context, NCCL buffers and allocator slack, a fixed `RESERVED_GIB`.

The per-token activation terms were checked against peak memory measured on CPU for small shapes
(`tests/train/test_memory_plan.py`, within 20%); the GPU-only terms (reserve, all-to-all buffers) are estimates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

GIB = 2**30
H100_80GB_GIB = 79.6  # what an H100-80GB reports (81,559 MiB)
RESERVED_GIB = 4.0  # CUDA context (~0.5), NCCL buffers (~1-2), allocator fragmentation
CLUSTERS = (8, 32, 64)


@dataclass
class MemoryEstimate:
    """Bytes per GPU of one training step, by term (see the module docstring), with its layout."""

    seq_len: int
    gpus: int
    context_parallel: int
    local_tokens: int
    weights: float
    gradients: float
    optimizer: float
    gathered: float
    checkpoints: float
    layer_recompute: float
    attention_workspace: float
    loss_chunk: float
    reserved: float

    @property
    def total(self) -> float:
        return sum(v for k, v in asdict(self).items() if k not in ("seq_len", "gpus", "context_parallel",
                                                                   "local_tokens"))

    @property
    def activations(self) -> float:
        """What grows with the tokens on a GPU: checkpoints, recompute, attention workspace, loss chunk."""
        return self.checkpoints + self.layer_recompute + self.attention_workspace + self.loss_chunk

    def gib(self) -> dict:
        return {k: (v / GIB if isinstance(v, float) else v) for k, v in asdict(self).items()} | {
            "total": self.total / GIB}


def parameter_counts(config) -> tuple[int, int, int]:
    """(all parameters, one decoder layer's, the root unit's: embeddings, final norm and head) of a config."""
    h, inter, heads, kv, d = (config.hidden_size, config.intermediate_size, config.num_attention_heads,
                              config.num_key_value_heads, config.head_dim)
    attention = h * heads * d * 2 + h * kv * d * 2
    if config.attention_bias:
        attention += heads * d + 2 * kv * d
    if config.attention_out_bias:
        attention += h
    mlp = 3 * h * inter + (2 * inter + h if config.mlp_bias else 0)
    norms = 2 * h * (2 if config.norm_type == "layernorm" else 1)
    layer = attention + mlp + norms
    root = config.vocab_size * h * (1 if config.tie_word_embeddings else 2) + h * (2 if config.norm_type ==
                                                                                    "layernorm" else 1)
    return layer * config.num_hidden_layers + root, layer, root


def training_memory(config, seq_len: int, gpus: int = 1, context_parallel: int = 1, rows: int = 1,
                    compute_bytes: int = 2, optimizer: bool = True, sharded: bool = True,
                    reserved_gib: float = RESERVED_GIB) -> MemoryEstimate:
    """Memory per GPU of one step of `rows` rows of `seq_len` tokens on `gpus` GPUs with sequences split over
    `context_parallel` of them (the module docstring lists the terms). `compute_bytes` 2 = bf16 compute, 4 = fp32;
    `sharded` False keeps every state whole on each GPU (no FSDP); `optimizer` False leaves out the moments."""
    if seq_len % context_parallel or gpus % context_parallel:
        raise ValueError(f"context_parallel={context_parallel} must divide seq_len={seq_len} and gpus={gpus}")
    c = compute_bytes
    h, inter, layers, vocab = (config.hidden_size, config.intermediate_size, config.num_hidden_layers,
                               config.vocab_size)
    heads, d = config.num_attention_heads, config.head_dim
    params, layer_params, root_params = parameter_counts(config)
    share = gpus if sharded else 1
    t = rows * seq_len // context_parallel
    chunk = min(config.loss_chunk_size or t, t)
    gathered = 0.0
    if sharded and gpus > 1:  # compute copy + gradient of the largest unit, and the prefetched next layer
        gathered = float(max(2 * layer_params, root_params) * (c + 4))
    all_to_all = 8 * heads * d * c if context_parallel > 1 else 0
    return MemoryEstimate(
        seq_len=seq_len, gpus=gpus, context_parallel=context_parallel, local_tokens=t,
        weights=4.0 * params / share,
        gradients=4.0 * params / share,
        optimizer=8.0 * params / share if optimizer else 0.0,
        gathered=gathered,
        checkpoints=float(layers * t * h * c),
        layer_recompute=float(t * (c * (9 * h + 4 * inter) + (8 * h if c < 4 else 0) + c * (h + 2 * inter))),
        attention_workspace=float(t * (all_to_all + 4 * heads + 4 * heads * d)),
        loss_chunk=float(chunk * vocab * (12 if c == 4 else c + 12) + t * h * (c + 4)),
        reserved=reserved_gib * GIB,
    )


def context_parallel_sizes(config, gpus: int) -> list[int]:
    """Sizes Ulysses can use on `gpus` GPUs: powers of two dividing the GPU count and the head counts."""
    sizes, size = [], 1
    while size <= gpus:
        if config.num_attention_heads % size == 0 and (config.num_key_value_heads % size == 0
                                                       or size % config.num_key_value_heads == 0):
            sizes.append(size)
        size *= 2
    return sizes


def best_layout(config, seq_len: int, gpus: int, budget_gib: float = H100_80GB_GIB) -> MemoryEstimate:
    """The smallest context-parallel size whose step fits `budget_gib` per GPU (more data parallelism is faster
    than more sequence splitting), else the layout with the least memory."""
    estimates = [training_memory(config, seq_len, gpus, size) for size in context_parallel_sizes(config, gpus)
                 if seq_len % size == 0]
    fitting = [e for e in estimates if e.total / GIB <= budget_gib]
    return fitting[0] if fitting else min(estimates, key=lambda e: e.total)


def stage_plan(config, seq_lens, clusters=CLUSTERS, budget_gib: float = H100_80GB_GIB) -> list[dict]:
    """For each stage length: the best layout on every cluster size and the smallest cluster that fits."""
    plan = []
    for seq_len in seq_lens:
        layouts = {gpus: best_layout(config, seq_len, gpus, budget_gib) for gpus in clusters}
        fits = [gpus for gpus, e in layouts.items() if e.total / GIB <= budget_gib]
        plan.append({"seq_len": seq_len, "layouts": layouts, "smallest_cluster": min(fits) if fits else None})
    return plan


def _length(n: int) -> str:
    return f"{n // 2**20}M" if n % 2**20 == 0 else f"{n // 1024}K"


def plan_markdown(config, seq_lens, clusters=CLUSTERS, budget_gib: float = H100_80GB_GIB, name: str = "") -> str:
    """The docs' table: per stage and cluster, GiB per GPU at the chosen context-parallel size, its main terms, and
    the smallest cluster that fits."""
    plan = stage_plan(config, seq_lens, clusters, budget_gib)
    params = parameter_counts(config)[0]
    lines = [f"{name or config.model_type}: {params / 1e9:.2f}B parameters, {config.num_hidden_layers} layers, "
             f"hidden {config.hidden_size}, {config.num_attention_heads} heads, vocabulary {config.vocab_size:,}, "
             f"loss chunk {config.loss_chunk_size or 'off'}; one row per GPU group, bf16 compute, FSDP2 over all "
             f"GPUs, budget {budget_gib} GiB per GPU.", "",
             "| stage | GPUs | context parallel | tokens per GPU | states (w+g+opt) GiB | checkpoints GiB | "
             "recompute + attention GiB | loss chunk GiB | total GiB per GPU | fits |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for stage in plan:
        for gpus, e in stage["layouts"].items():
            g = e.gib()
            states = g["weights"] + g["gradients"] + g["optimizer"] + g["gathered"]
            working = g["layer_recompute"] + g["attention_workspace"]
            lines.append(f"| {_length(stage['seq_len'])} | {gpus} | {e.context_parallel} | {e.local_tokens:,} | "
                         f"{states:.1f} | {g['checkpoints']:.1f} | {working:.1f} | {g['loss_chunk']:.1f} | "
                         f"{g['total']:.1f} | {'yes' if e.total / GIB <= budget_gib else 'no'} |")
    lines += ["", f"| stage | smallest cluster that fits | unsplit rows (context parallel 1) on {min(clusters)} GPUs, "
              "GiB per GPU |", "|---|---|---:|"]
    for stage in plan:
        smallest = stage["smallest_cluster"]
        e = stage["layouts"].get(smallest)
        unsplit = training_memory(config, stage["seq_len"], min(clusters), 1).total / GIB
        lines.append(f"| {_length(stage['seq_len'])} | "
                     + (f"{smallest} GPUs, context parallel {e.context_parallel}" if smallest else "none listed")
                     + f" | {unsplit:.1f} |")
    return "\n".join(lines)


__all__ = ["CLUSTERS", "H100_80GB_GIB", "MemoryEstimate", "RESERVED_GIB", "best_layout", "context_parallel_sizes",
           "parameter_counts", "plan_markdown", "stage_plan", "training_memory"]
