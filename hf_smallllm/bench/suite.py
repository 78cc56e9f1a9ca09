"""The model benchmark: our classes against their transformers twins, measured interleaved in one process.

Rows per family and size: prefill tokens/s (one prompt), decode tokens/s with a KV cache at batch 1 and 8,
forward+backward tokens/s on packed rows (per-document positions), and peak memory growth. Each row times our
class and its twin (same weight tensors, see `twins.py`) alternately, after a warm-up, and reports medians and
the ratio ours/reference (for memory: reference/ours, so that > 1 is always better for us). Decode rows are
also set against the memory-bandwidth ceiling: every decoded token reads every weight once, so
tokens/s <= read bandwidth / weight bytes. Rows that cannot run here (no GPU, too little memory) are reported as
"not measured" with the reason, never with a made-up number.
"""

import gc
import math
import time
from dataclasses import asdict, dataclass, field

import torch

from ..models.auto import FAMILIES
from ..models.presets import preset_config
from .measure import median_seconds, track_peak_memory
from .twins import reference_twin


@dataclass
class Row:
    family: str
    size: str
    metric: str
    unit: str
    ours: float | None
    reference: float | None
    reference_name: str = ""
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.ours or not self.reference:
            return None
        return self.ours / self.reference if self.higher_is_better else self.reference / self.ours

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class SuiteSettings:
    """What to measure; `quick()` keeps a full run to a few minutes on 2 CPU cores."""

    families: tuple = tuple(FAMILIES)
    sizes: tuple = ("small",)
    prompt_length: int = 512
    decode_prompt_length: int = 64
    decode_steps: int = 16
    train_rows: int = 2
    train_length: int = 512
    repeats: int = 3
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    memory_budget_bytes: int = field(default_factory=lambda: _available_memory_bytes())

    @classmethod
    def quick(cls, **overrides):
        return cls(**{"prompt_length": 256, "decode_steps": 8, "train_length": 256, "repeats": 2, **overrides})


def _available_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def weight_bytes_per_decoded_token(model) -> int:
    """Bytes read from weights to decode one token: every parameter once, except the input embedding matrix, of
    which only one row is gathered (unless it doubles as the tied output head)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if not model.config.tie_word_embeddings:
        embedding = model.get_input_embeddings().weight
        total -= embedding.numel() * embedding.element_size()
    return total


def _interleaved(functions: dict, settings: SuiteSettings) -> dict:
    """Median seconds per function, measuring them in turns so that machine noise hits all alike."""
    times = {name: [] for name in functions}
    for fn in functions.values():
        median_seconds(fn, repeats=1, warmup=0, device=settings.device)  # warm-up
    for _ in range(settings.repeats):
        for name, fn in functions.items():
            times[name].append(median_seconds(fn, repeats=1, warmup=0, device=settings.device))
    return {name: sorted(values)[len(values) // 2] for name, values in times.items()}


def _decode_run(model, batch: int, settings: SuiteSettings, vocab: int):
    """A function that prefills a fresh cache (untimed) and returns the seconds spent decoding
    `settings.decode_steps` tokens after it, greedily, one forward per token."""
    prompt = torch.randint(3, vocab, (batch, settings.decode_prompt_length), device=settings.device)
    sync = torch.cuda.synchronize if settings.device.startswith("cuda") else (lambda: None)

    def run() -> float:
        with torch.no_grad():
            out = model(prompt, use_cache=True)
            cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
            sync()
            start = time.perf_counter()
            for _ in range(settings.decode_steps):
                out = model(token, past_key_values=cache, use_cache=True)
                cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
            sync()
            return time.perf_counter() - start

    return run


def _interleaved_self_timed(functions: dict, settings: SuiteSettings) -> dict:
    """Like `_interleaved` for functions that time themselves (return seconds)."""
    for fn in functions.values():
        fn()  # warm-up
    times = {name: [] for name in functions}
    for _ in range(settings.repeats):
        for name, fn in functions.items():
            times[name].append(fn())
    return {name: sorted(values)[len(values) // 2] for name, values in times.items()}


def _packed_rows(settings: SuiteSettings, vocab: int):
    """`train_rows` rows of `train_length` tokens, each packed with documents of varied lengths."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (settings.train_rows, settings.train_length), generator=generator)
    positions = []
    for _ in range(settings.train_rows):
        row, left = [], settings.train_length
        while left > 0:
            length = min(left, int(torch.randint(32, 256, (1,), generator=generator)))
            row.append(torch.arange(length))
            left -= length
        positions.append(torch.cat(row))
    return ids.to(settings.device), torch.stack(positions).to(settings.device)


def measure_pair(family: str, size: str, settings: SuiteSettings):
    """(rows, our model) for one family at one size; the model is None when the size does not fit in memory."""
    config = preset_config(family, "published" if size == "published" else size, attn_implementation="sdpa")
    with torch.device("meta"):
        probe = FAMILIES[family].causal_lm_class(config)
    need = probe.num_parameters() * torch.finfo(settings.dtype).bits // 8
    del probe
    # ours + twin share weights; decoding and GLM's fused copy need headroom
    if need * 1.6 > settings.memory_budget_bytes:
        reason = f"not measured: needs ~{need * 1.6 / 2**30:.0f} GiB, {settings.memory_budget_bytes / 2**30:.0f} GiB free"
        return [Row(family, size, "all", "", None, None, note=reason)], None

    torch.manual_seed(0)
    ours = FAMILIES[family].causal_lm_class(config).to(settings.device, settings.dtype).eval()
    twin, reference_name = reference_twin(ours)
    vocab = config.vocab_size
    rows = []

    def add(metric, unit, values, higher=True, note=""):
        rows.append(Row(family, size, metric, unit, values.get("ours"), values.get("reference"), reference_name,
                        higher, note))

    # prefill
    prompt = torch.randint(3, vocab, (1, settings.prompt_length), device=settings.device)

    def prefill(model):
        def run():
            with torch.no_grad():
                model(prompt, use_cache=True)
        return run

    seconds = _interleaved({"ours": prefill(ours), "reference": prefill(twin)}, settings)
    add(f"prefill tokens/s (prompt {settings.prompt_length})", "tok/s",
        {k: settings.prompt_length / v for k, v in seconds.items()})
    peaks = {}
    for name, model in (("ours", ours), ("reference", twin)):
        with track_peak_memory(settings.device) as peak:
            prefill(model)()
        peaks[name] = peak.delta / 2**20
    add(f"prefill peak memory (prompt {settings.prompt_length})", "MiB", peaks, higher=False)

    # decode
    for batch in (1, 8):
        seconds = _interleaved_self_timed(
            {name: _decode_run(model, batch, settings, vocab) for name, model in (("ours", ours), ("reference", twin))},
            settings)
        add(f"decode tokens/s (batch {batch})", "tok/s", {k: batch * settings.decode_steps / v for k, v in seconds.items()})

    # forward + backward on packed rows (small sizes only: training a published size needs optimizer memory too)
    if size != "published":
        ids, position_ids = _packed_rows(settings, vocab)

        def train_step(model):
            def run():
                model.zero_grad(set_to_none=True)
                out = model(ids, position_ids=position_ids, labels=ids, use_cache=False)
                out.loss.backward()
            return run

        ours.train()
        twin.train()
        seconds = _interleaved({"ours": train_step(ours), "reference": train_step(twin)}, settings)
        tokens = settings.train_rows * settings.train_length
        add(f"forward+backward tokens/s (packed {settings.train_rows}x{settings.train_length})", "tok/s",
            {k: tokens / v for k, v in seconds.items()})
        peaks = {}
        for name, model in (("ours", ours), ("reference", twin)):
            model.zero_grad(set_to_none=True)
            gc.collect()
            with track_peak_memory(settings.device) as peak:
                train_step(model)()
            peaks[name] = peak.delta / 2**20
        add("forward+backward peak memory", "MiB", peaks, higher=False)
        ours.zero_grad(set_to_none=True)
        twin.zero_grad(set_to_none=True)
        ours.eval()
        twin.eval()

    del twin
    gc.collect()
    return rows, ours


def decode_ceiling_rows(family: str, size: str, model, bandwidth: float, settings: SuiteSettings) -> list[Row]:
    """Batch-1 decode of `model` as is and with oneDNN-packed linear layers, against the bandwidth ceiling."""
    from ..inference.cpu_linear import can_pack_linears, pack_linears, unpack_linears

    bytes_per_token = weight_bytes_per_decoded_token(model)
    ceiling = bandwidth / bytes_per_token
    rows = []
    variants = {"plain nn.Linear": lambda: None}
    if settings.device == "cpu" and settings.dtype == torch.float32 and can_pack_linears():
        variants["oneDNN-packed linears"] = lambda: pack_linears(model)
    for label, prepare in variants.items():
        prepare()
        seconds = _interleaved_self_timed({"v": _decode_run(model, 1, settings, model.config.vocab_size)}, settings)
        rate = settings.decode_steps / seconds["v"]
        rows.append(Row(family, size, f"decode b1, {label}: fraction of bandwidth ceiling", "tok/s", rate, ceiling,
                        f"ceiling {bandwidth / 1e9:.1f} GB/s / {bytes_per_token / 1e9:.2f} GB per token",
                        note=f"{rate / ceiling:.0%} of the ceiling"))
    unpack_linears(model)
    return rows


def not_measured_gpu_rows() -> list[Row]:
    reason = "not measured: no CUDA GPU on this machine"
    return [
        Row("tinyllama", "published", metric, "", None, None, note=reason)
        for metric in ("training MFU (bf16, flash-attn 2, packed varlen)", "decode tokens/s (bf16, CUDA)",
                       "flash-attn 2 varlen with ALiBi slopes (BTLM) tokens/s")
    ]


def format_markdown(rows: list[Row], machine: dict) -> str:
    lines = [
        f"Machine: {machine.get('cpu')}, {machine.get('threads')} threads; torch {machine.get('torch')}, "
        f"transformers {machine.get('transformers')}; dtype float32 unless stated.",
        "",
        "| family | size | metric | ours | reference | ratio | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        fmt = (lambda v: "-" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"))
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
        reference = fmt(row.reference) + (f" ({row.reference_name})" if row.reference_name and row.reference else "")
        lines.append(f"| {row.family} | {row.size} | {row.metric} | {fmt(row.ours)} {row.unit} | {reference} | "
                     f"{ratio} | {row.note} |")
    return "\n".join(lines) + "\n"


def geometric_mean(values) -> float:
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")
