"""The model benchmark: our classes against their transformers twins, measured interleaved in one process.

Rows per family and size: prefill tokens/s (one prompt), decode tokens/s with a KV cache at batch 1 and 8,
forward+backward tokens/s on packed rows (per-document positions), and peak memory growth. Each row times our
class and its twin (same weight tensors, see `twins.py`) in rounds after a warm-up, the order alternating from
round to round so that neither side always runs first (on a warmer cache, or just after a burst of machine noise).
The ratio is the median of the per-round ratios ours/reference (for memory: reference/ours, so that > 1 is always
better for us), given with a distribution-free 95% confidence interval: a median below 1.00 whose interval reaches
1.00 is a tie within this machine's noise, one whose interval stays below 1.00 is behind. Where `hf-smallllm
generate` would pack the linears for oneDNN on this machine (`pack_linears_if_faster`), that CPU inference path is
measured against the same twin in rows of its own. Decode rows are also set against the memory-bandwidth ceiling:
every decoded token reads every weight once, so tokens/s <= read bandwidth / weight bytes. Rows that cannot run here (no
GPU, too little memory) are reported as "not measured" with the reason, never with a made-up number.
"""

import gc
import math
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from ..families import FAMILIES, preset_config
from ..inference.cpu_linear import available_memory_bytes
from .measure import track_peak_memory
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
    # ours/reference (or reference/ours for lower-is-better) of each measuring round, when rounds were paired
    round_ratios: list = field(default_factory=list)
    # False where `reference` is a limit (the bandwidth ceiling) rather than a competitor
    is_comparison: bool = True
    # the ratio this row is judged against: 1.0 (at least as fast as the reference) unless a row states its own
    # (4-bit decoding against llama.cpp's q4_0 aims at 0.5)
    target: float = 1.0

    @property
    def ratio(self) -> float | None:
        if self.round_ratios:
            return statistics.median(self.round_ratios)
        if not self.ours or not self.reference:
            return None
        return self.ours / self.reference if self.higher_is_better else self.reference / self.ours

    @property
    def ratio_range(self) -> tuple[float, float] | None:
        """Interquartile range of the per-round ratios (None with fewer than 4 rounds)."""
        if len(self.round_ratios) < 4:
            return None
        q1, _, q3 = statistics.quantiles(self.round_ratios, n=4, method="inclusive")
        return q1, q3

    @property
    def ratio_interval(self) -> tuple[float, float] | None:
        """95% confidence interval of the median per-round ratio (None with fewer than 6 rounds)."""
        return median_confidence_interval(self.round_ratios)

    @property
    def verdict(self) -> str:
        """'ahead' (ratio >= its target), 'tie' (below, but its confidence interval reaches the target), 'behind',
        or '' for rows that compare nothing."""
        if self.ratio is None or not self.is_comparison:
            return ""
        if self.ratio >= self.target:
            return "ahead"
        interval = self.ratio_interval
        return "tie" if interval is not None and interval[1] >= self.target else "behind"

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "ratio_range": self.ratio_range,
                "ratio_interval_95": self.ratio_interval, "verdict": self.verdict}


def median_confidence_interval(values, level: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free confidence interval for the median of `values`: the order statistics x(k) and x(n+1-k),
    with k the largest rank such that P(Binomial(n, 1/2) < k) <= (1 - level) / 2. None when n is too small for any
    k >= 1 (fewer than 6 values at 95%)."""
    ordered = sorted(values)
    n = len(ordered)
    tail, k, below = (1.0 - level) / 2, 0, 0.0
    while k < n // 2:
        below += math.comb(n, k) / 2**n  # P(B <= k) = P(B < k + 1)
        if below > tail:
            break
        k += 1
    return (ordered[k - 1], ordered[n - k]) if k >= 1 else None


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
    repeats: int = 16  # even, so that each side runs first equally often; 16 puts the 95% interval at ranks 4 and 13
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    memory_budget_bytes: int = field(default_factory=lambda: available_memory_bytes() or 8 * 2**30)

    @classmethod
    def quick(cls, **overrides):
        return cls(**{"prompt_length": 256, "decode_steps": 8, "train_length": 256, **overrides})


def weight_bytes_per_decoded_token(model) -> int:
    """Bytes read from weights to decode one token: every parameter once, except the input embedding matrix, of
    which only one row is gathered (unless it doubles as the tied output head)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if not model.config.tie_word_embeddings:
        embedding = model.get_input_embeddings().weight
        total -= embedding.numel() * embedding.element_size()
    return total


def paired_rounds(functions: dict, repeats: int, device: str = "cpu", self_timed: bool = False) -> dict:
    """Seconds per round for each function, measured in `repeats` rounds after one warm-up call each. Every round
    calls every function once; odd rounds call them in reverse order. `self_timed` functions return their own
    seconds (e.g. decoding after an untimed prefill); the others are timed around the call."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def timed(fn) -> float:
        if self_timed:
            return fn()
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    for fn in functions.values():
        timed(fn)
    times = {name: [] for name in functions}
    names = list(functions)
    for round_index in range(repeats):
        for name in (names if round_index % 2 == 0 else names[::-1]):
            times[name].append(timed(functions[name]))
    return times


def _compare(functions: dict, settings: SuiteSettings, self_timed: bool = False) -> tuple[dict, list]:
    """(median seconds per function, per-round ratios reference/ours) for {"ours": fn, "reference": fn}: the ratio
    of rates, > 1 when ours is faster."""
    times = paired_rounds(functions, settings.repeats, settings.device, self_timed)
    ratios = [reference / ours for ours, reference in zip(times["ours"], times["reference"], strict=True)]
    return {name: statistics.median(values) for name, values in times.items()}, ratios


def _decode_run(model, batch: int, settings: SuiteSettings, vocab: int):
    """A function that prefills a fresh cache (untimed) and returns the seconds spent decoding
    `settings.decode_steps` tokens after it, greedily, one forward per token."""
    prompt = torch.randint(3, vocab, (batch, settings.decode_prompt_length), device=settings.device)
    sync = torch.cuda.synchronize if settings.device.startswith("cuda") else (lambda: None)

    def run() -> float:
        with torch.no_grad():
            out = model(prompt, use_cache=True)
            cache, token = out.cache, out.logits[:, -1:].argmax(-1)
            sync()
            start = time.perf_counter()
            for _ in range(settings.decode_steps):
                out = model(token, cache=cache, use_cache=True)
                cache, token = out.cache, out.logits[:, -1:].argmax(-1)
            sync()
            return time.perf_counter() - start

    return run


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


def measure_pair(family: str, size: str, settings: SuiteSettings, bandwidth=None) -> list[Row]:
    """All rows for one family at one size: ours against the twin (defaults on both sides, then our CPU inference
    path where it differs), and, given the machine's read `bandwidth` (bytes/s, or a function that measures it when
    the decode rows are done), batch-1 decode against its ceiling."""
    from ..inference.cpu_linear import can_pack_linears, pack_linears_if_faster, unpack_linears

    config = preset_config(family, size, attn_implementation="sdpa")
    with torch.device("meta"):
        probe = FAMILIES[family].causal_lm_class(config)
    need = probe.num_parameters() * torch.finfo(settings.dtype).bits // 8
    del probe
    # ours + twin share weights; decoding and GLM's fused copy need headroom
    if need * 1.6 > settings.memory_budget_bytes:
        reason = (f"not measured: needs ~{need * 1.6 / 2**30:.0f} GiB, "
                  f"{settings.memory_budget_bytes / 2**30:.0f} GiB free")
        return [Row(family, size, "all", "", None, None, note=reason)]

    torch.manual_seed(0)
    ours = FAMILIES[family].causal_lm_class(config).to(settings.device, settings.dtype).eval()
    twin, reference_name = reference_twin(ours)
    vocab = config.vocab_size
    rows = []

    def add(metric, unit, values, ratios=(), higher=True, note=""):
        rows.append(Row(family, size, metric, unit, values.get("ours"), values.get("reference"), reference_name,
                        higher, note, list(ratios)))

    prompt = torch.randint(3, vocab, (1, settings.prompt_length), device=settings.device)

    def prefill(model):
        def run():
            with torch.no_grad():
                model(prompt, use_cache=True)
        return run

    def compare_inference(label: str = "") -> dict:
        """Prefill and decode rows, ours against the twin; returns our batch-1 decode tokens/s."""
        seconds, ratios = _compare({"ours": prefill(ours), "reference": prefill(twin)}, settings)
        add(f"{label}prefill tokens/s (prompt {settings.prompt_length})", "tok/s",
            {k: settings.prompt_length / v for k, v in seconds.items()}, ratios)
        rates = {}
        for batch in (1, 8):
            runs = {name: _decode_run(model, batch, settings, vocab)
                    for name, model in (("ours", ours), ("reference", twin))}
            seconds, ratios = _compare(runs, settings, self_timed=True)
            values = {k: batch * settings.decode_steps / v for k, v in seconds.items()}
            add(f"{label}decode tokens/s (batch {batch})", "tok/s", values, ratios)
            rates[batch] = values["ours"]
        return rates[1]

    decode_rates = {"plain nn.Linear": compare_inference()}
    peaks = {}
    for name, model in (("ours", ours), ("reference", twin)):
        with track_peak_memory(settings.device) as peak:
            prefill(model)()
        peaks[name] = peak.delta / 2**20
    add(f"prefill peak memory (prompt {settings.prompt_length})", "MiB", peaks, higher=False)

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
        seconds, ratios = _compare({"ours": train_step(ours), "reference": train_step(twin)}, settings)
        tokens = settings.train_rows * settings.train_length
        add(f"forward+backward tokens/s (packed {settings.train_rows}x{settings.train_length})", "tok/s",
            {k: tokens / v for k, v in seconds.items()}, ratios)
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

    # Our CPU inference path (`load_for_inference`): oneDNN-packed linears where a timed one-token forward is faster
    # on this machine. The packed layers are a second copy of the weights while the twin holds the first.
    packable = settings.device == "cpu" and settings.dtype == torch.float32 and can_pack_linears()
    if packable and need * 2.2 <= settings.memory_budget_bytes:
        choice = pack_linears_if_faster(ours)
        if choice.packed_seconds is not None:
            path = ("rows 'packed linears: ...' below" if choice.packed
                    else "the same-settings rows above (packing did not pay here)")
            kept = "oneDNN-packed" if choice.packed else "plain"
            rows.append(Row(family, size, "CPU inference path: one-token forward, oneDNN-packed vs plain linears",
                            "ms", choice.packed_seconds * 1e3, choice.plain_seconds * 1e3, "plain nn.Linear",
                            higher_is_better=False, note=f"kept {kept} linears; our path is {path}",
                            is_comparison=False))
        if choice.packed:
            decode_rates["oneDNN-packed linears"] = compare_inference("packed linears: ")
            unpack_linears(ours)
    elif packable:
        rows.append(Row(family, size, "packed linears: all", "", None, None,
                        note=f"not measured: needs ~{need * 2.2 / 2**30:.0f} GiB"))

    if callable(bandwidth):
        bandwidth = bandwidth()
    if bandwidth:
        rows.extend(decode_ceiling_rows(family, size, ours, decode_rates, bandwidth))
    twin = ours = None  # the closures above share these variables: clear them so that gc.collect frees both models
    gc.collect()
    return rows


def decode_ceiling_rows(family: str, size: str, model, decode_rates: dict, bandwidth: float) -> list[Row]:
    """Measured batch-1 decode tokens/s ({label: rate}) against the bandwidth ceiling of `model`."""
    from .measure import last_level_cache_bytes

    bytes_per_token = weight_bytes_per_decoded_token(model)
    ceiling = bandwidth / bytes_per_token
    cache = last_level_cache_bytes()
    # weights that fit in the last-level cache are not read from memory: the "ceiling" is then no limit
    caveat = (f"; the weights fit in the {cache / 2**20:.0f} MiB last-level cache, so memory bandwidth does not bound "
              "this model" if cache and bytes_per_token < cache else "")
    return [
        Row(family, size, f"decode b1, {label}: fraction of bandwidth ceiling", "tok/s", rate, ceiling,
            f"ceiling {bandwidth / 1e9:.1f} GB/s / {bytes_per_token / 1e9:.2f} GB per token",
            note=f"{rate / ceiling:.0%} of the ceiling{caveat}", is_comparison=False)
        for label, rate in decode_rates.items()
    ]


# Kinds of comparison in the summary, by metric prefix; the rest compare both classes with the same settings.
_GROUPS = (("packed linears", "packed CPU inference path"), ("CPU inference option", "CPU inference options"),
           ("CUDA bf16", "CUDA bf16, same settings"))


def verdict_summary(rows: list[Row]) -> str:
    """One line per kind of comparison: how many rows are at or above their target ratio (1.00 unless the row states
    another), tied with it within noise, or behind it."""
    groups: dict[str, dict[str, int]] = {}
    for row in rows:
        if row.verdict:
            group = next((name for prefix, name in _GROUPS if row.metric.startswith(prefix)), "same settings")
            counts = groups.setdefault(group, {"ahead": 0, "tie": 0, "behind": 0})
            counts[row.verdict] += 1
    return "\n".join(
        f"- ours vs reference, {group}: {c['ahead']} rows at or above their target ratio (1.00 unless the row "
        f"names another), {c['tie']} below it but tied within noise (the 95% confidence interval of the median "
        f"per-round ratio reaches it), {c['behind']} behind"
        for group, c in groups.items()
    )


def format_markdown(rows: list[Row], machine: dict, repeats: int | None = None) -> str:
    rounds = f", {repeats} paired rounds per row" if repeats else ""
    kernels = machine.get("read_bandwidth_by_kernel_GBps") or {}
    kernels = f" (best of: {', '.join(f'{k} {v}' for k, v in kernels.items())})" if kernels else ""
    cache = f", {machine['last_level_cache_MiB']} MiB last-level cache" if machine.get("last_level_cache_MiB") else ""
    lines = [
        f"Machine: {machine.get('cpu')}, {machine.get('threads')} threads{cache}, read bandwidth "
        f"{machine.get('read_bandwidth_GBps', '?')} GB/s at the start{kernels}; torch {machine.get('torch')}, "
        f"transformers {machine.get('transformers')}; dtype float32 unless stated{rounds}. Each ceiling row uses "
        "the bandwidth re-measured right after that model's decode rows.",
        "",
    ]
    summary = verdict_summary(rows)
    if summary:
        lines += [summary, ""]
    lines += [
        "| family | size | metric | ours | reference | ratio (95% CI) | note |",
        "|---|---|---|---|---|---|---|",
    ]

    def fmt(v):
        return "-" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}")

    for row in rows:
        interval = row.ratio_interval
        ratio = "-" if row.ratio is None else f"{row.ratio:.{3 if interval else 2}f}"
        if interval:  # three decimals, so that an interval that misses 1.00 never prints as reaching it
            ratio += f" ({interval[0]:.3f}-{interval[1]:.3f})"
        if row.verdict == "tie":
            ratio += " tie"
        if row.is_comparison and row.target != 1.0:
            ratio += f" (target {row.target:.2f})"
        reference = fmt(row.reference) + (f" ({row.reference_name})" if row.reference_name and row.reference else "")
        lines.append(f"| {row.family} | {row.size} | {row.metric} | {fmt(row.ours)} {row.unit} | {reference} | "
                     f"{ratio} | {row.note} |")
    return "\n".join(lines) + "\n"


def geometric_mean(values) -> float:
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")
