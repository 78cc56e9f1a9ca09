"""Training throughput of packed rows on CPU: what per-document attention costs, and how our class compares with
transformers' Llama fed by `DataCollatorWithFlattening`.

One ~20M-parameter TinyLlama-shaped model (hidden 256, 6 layers, GQA 8/4, 32k vocabulary) runs full training
steps (forward, backward, AdamW) in four configurations, interleaved in one process so machine noise hits them
alike:
- `document`: our class on [rows, seq_len] packed rows whose position ids restart per document (block-diagonal
  attention; what `packing: document` recipes train);
- `causal`: the same rows with position ids 0..seq_len-1 (plain causal packing, TinyLlama style);
- `llama-flattened` and `ours-flattened`: transformers' `LlamaForCausalLM` (same weights) and our class on the
  single flattened row `DataCollatorWithFlattening` builds from the same documents (position ids restart per
  document, labels -100 at document starts).
Document lengths are drawn from the bundled corpus's real lengths in tokens (shuffled), so the mask structure is
what pretraining sees. Targets: document/causal <= 1.10 in time (>= 0.91 in tokens/s), ours/llama >= 1.0.
"""

import random
from dataclasses import dataclass

import torch

from ..families import FAMILIES, preset_config
from .measure import median_seconds

MODEL_OVERRIDES = {"vocab_size": 32000, "hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 6,
                   "num_attention_heads": 8, "num_key_value_heads": 4, "max_position_embeddings": 2048}


@dataclass
class ThroughputSettings:
    rows: int = 4
    seq_len: int = 512
    repeats: int = 5
    min_doc: int = 16
    max_doc: int = 400
    seed: int = 0


def document_lengths(total: int, settings: ThroughputSettings) -> list[int]:
    """Document lengths summing to `total`: lengths of bundled-corpus documents in characters / 4 (a typical
    BPE ratio), clipped to [min_doc, max_doc], in a seeded random order."""
    from ..data import DocumentSource

    rng = random.Random(settings.seed)
    source = DocumentSource(name="shakespeare", paths=["bundled:en_shakespeare.txt"], split_by="blank_line")
    pool = [min(max(len(text) // 4, settings.min_doc), settings.max_doc) for text in source.iter_documents()]
    lengths, left = [], total
    while left > 0:
        length = min(rng.choice(pool), left)
        lengths.append(length)
        left -= length
    return lengths


def _positions(lengths: list[int]) -> torch.Tensor:
    return torch.cat([torch.arange(n) for n in lengths])


def build_batches(settings: ThroughputSettings, vocab: int) -> dict[str, dict]:
    from transformers import DataCollatorWithFlattening

    generator = torch.Generator().manual_seed(settings.seed)
    total = settings.rows * settings.seq_len
    lengths = document_lengths(total, settings)
    ids = torch.randint(3, vocab, (total,), generator=generator)
    # rows: documents cut at row boundaries continue in the next row with positions restarting (as the packer does)
    positions = _positions(lengths)
    document_positions = []
    for row in range(settings.rows):
        chunk = positions[row * settings.seq_len:(row + 1) * settings.seq_len].clone()
        if chunk[0] != 0:  # a continued document restarts at the row start
            first_zero = int((chunk == 0).nonzero()[0]) if (chunk == 0).any() else len(chunk)
            chunk[:first_zero] = torch.arange(first_zero)
        document_positions.append(chunk)
    rows = ids.view(settings.rows, settings.seq_len)
    labels = rows.clone()
    doc_pos = torch.stack(document_positions)
    labels[doc_pos == 0] = -100
    features, start = [], 0
    for length in lengths:
        features.append({"input_ids": ids[start:start + length].tolist()})
        start += length
    flat = DataCollatorWithFlattening(return_tensors="pt")(features)
    return {
        "document": {"input_ids": rows, "position_ids": doc_pos, "labels": labels},
        "causal": {"input_ids": rows, "position_ids": torch.arange(settings.seq_len).expand(settings.rows, -1),
                   "labels": rows},
        "flattened": {k: flat[k] for k in ("input_ids", "position_ids", "labels")},
    }


def measure_training_throughput(settings: ThroughputSettings | None = None, progress=print) -> dict:
    """Median seconds per training step and tokens/s for each configuration, plus the two ratios."""
    from ..convert.formats import native_model

    settings = settings or ThroughputSettings()
    torch.manual_seed(settings.seed)
    config = preset_config("tinyllama", "tiny", attn_implementation="sdpa", **MODEL_OVERRIDES)
    ours = FAMILIES["tinyllama"].causal_lm_class(config)
    llama = native_model(ours, "llama").train()  # its own copy of our initial weights
    batches = build_batches(settings, config.vocab_size)
    parameters = sum(p.numel() for p in ours.parameters())
    progress(f"model: {parameters / 1e6:.1f}M parameters; {settings.rows} rows x {settings.seq_len} tokens, "
             f"{int((batches['document']['position_ids'] == 0).sum())} document starts")

    def step(model, batch):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def run():
            optimizer.zero_grad(set_to_none=True)
            model(**batch, use_cache=False).loss.backward()
            optimizer.step()
        return run

    runs = {
        "document": step(ours, batches["document"]),
        "causal": step(ours, batches["causal"]),
        "ours-flattened": step(ours, batches["flattened"]),
        "llama-flattened": step(llama, batches["flattened"]),
    }
    seconds = {name: [] for name in runs}
    for run in runs.values():
        run()  # warm-up
    for repeat in range(settings.repeats):
        for name, run in runs.items():  # interleaved
            seconds[name].append(median_seconds(run, repeats=1, warmup=0))
        progress(f"repeat {repeat + 1}/{settings.repeats}")
    tokens = settings.rows * settings.seq_len
    medians = {name: sorted(v)[len(v) // 2] for name, v in seconds.items()}
    return {
        "parameters": parameters,
        "tokens_per_step": tokens,
        "seconds_per_step": medians,
        "tokens_per_second": {name: tokens / s for name, s in medians.items()},
        "document_over_causal_time": medians["document"] / medians["causal"],
        "ours_over_llama_tokens_per_second": medians["llama-flattened"] / medians["ours-flattened"],
    }


def format_markdown(result: dict, machine: dict) -> str:
    lines = [f"Training throughput, {result['parameters'] / 1e6:.1f}M-parameter model, "
             f"{result['tokens_per_step']} tokens per step, {machine.get('threads')} threads ({machine.get('cpu')}, "
             f"torch {machine.get('torch')})", "",
             "| configuration | tokens/s | s/step |", "|---|---:|---:|"]
    for name, tps in result["tokens_per_second"].items():
        lines.append(f"| {name} | {tps:,.0f} | {result['seconds_per_step'][name]:.3f} |")
    lines += ["", f"- block-diagonal (document) vs plain causal packing, time per step: "
              f"**{result['document_over_causal_time']:.3f}x** (target <= 1.10)",
              f"- ours vs LlamaForCausalLM + DataCollatorWithFlattening, tokens/s: "
              f"**{result['ours_over_llama_tokens_per_second']:.3f}x** (target >= 1.0)"]
    return "\n".join(lines) + "\n"


__all__ = ["ThroughputSettings", "build_batches", "format_markdown", "measure_training_throughput"]
