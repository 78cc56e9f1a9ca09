"""The pretraining data stream: mixed, packed, curriculum-scheduled micro-batches; each process reads only its rows.

Every source is an endless token stream (`PreparedTokens`: memory-mapped shards from `hf-smallllm data prepare`;
`OnTheFlyTokens`: tokenized as needed, for small corpora). A row is `seq_len` consecutive tokens of one source, so
a row is fully described by (source, offset), and the stream's job is to say, for global row `g` of step `s`, which
source and which offset. That plan depends only on the recipe and the seed, never on the number of processes:

1. Rows per source. Step `s` has `R = tokens_per_step / seq_len(s)` rows. Each source's cumulative target
   `T(s) = sum over steps <= s of R x weight(step)` (mixture phases, linear ramps) is tracked, and the step's rows are
   split so that every source's cumulative row count stays within about one row of its target (the step's
   shortfalls rounded to whole rows, largest first). Realised proportions therefore equal the recipe's per phase,
   without sampling noise, and computing a step costs a few operations per source, however many rows it has.
2. Where rows start. Within a step, source `k` owns a block of `count_k` consecutive slots; its rows start at the
   source's running offset `base_k` and follow each other. After the step, `base_k += count_k x seq_len(s)`.
3. Who reads what. Global row `g` sits in slot `(a g + b) mod R`, with `a` coprime to `R` and both drawn from
   `(seed, s)`, so every micro-batch mixes sources. The global batch is cut into `gradient_accumulation_steps x
   world_size` micro-batches in order; process `rank` builds only rows `(micro x world_size + rank) x per_micro ...`
   and reads only their tokens.

So a run on N processes sees exactly the rows of a 1-process run with the same global batch, bit for bit, and a
process's work per step is its own rows plus a few operations per source. Rows become `input_ids`, `labels` and
`position_ids` in `pack_rows` (`document` packing: positions restart after every EOS; `causal`).

`state_dict()` at a step boundary records the next step, each source's offset, cumulative row counts and targets,
and each on-the-fly source's document cursor; `load_state_dict()` continues with exactly the rows an uninterrupted
run would have seen next. `seek(step)` gets there from the start without reading any tokens.
"""

import math
from bisect import bisect_right
from collections import Counter, defaultdict
from itertools import accumulate

import numpy as np
import torch
from torch.utils.data import IterableDataset

from ..models.modeling_smallllm import flash_varlen_kwargs_from_position_ids
from .packing import PACKING_MODES, pack_rows
from .schedules import MixtureSchedule, SequenceLengthSchedule, _phase_end_step
from .shards import PreparedDataError

STATE_VERSION = 2
_MASK64 = (1 << 64) - 1


def _mix64(value: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of an integer."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


class StepPlan:
    """Where the rows of one step come from (see the module docstring)."""

    __slots__ = ("bases", "block_ends", "counts", "multiplier", "names", "phase", "rows", "seq_len", "shift", "step",
                 "weights")

    def __init__(self, step, seq_len, rows, weights, phase, names, counts, bases, seed):
        self.step, self.seq_len, self.rows, self.weights, self.phase = step, seq_len, rows, weights, phase
        self.names = names  # sources with rows this step, in recipe order
        self.counts = counts
        self.bases = bases
        self.block_ends = list(accumulate(counts))
        hashed = _mix64((seed & _MASK64) * 0x100000001B3 + step)
        self.shift = hashed % rows
        multiplier = 1 + (hashed >> 20) % (rows - 1) if rows > 1 else 1
        while math.gcd(multiplier, rows) != 1:
            multiplier += 1
        self.multiplier = multiplier

    def row(self, global_row: int) -> tuple[str, int]:
        """(source, token offset) of global row `global_row` of the step."""
        slot = (self.multiplier * global_row + self.shift) % self.rows
        block = bisect_right(self.block_ends, slot)
        start = self.block_ends[block] - self.counts[block]
        return self.names[block], self.bases[block] + (slot - start) * self.seq_len


class PackedBatchStream(IterableDataset):
    """Micro-batches of this process (`rank` of `world_size`) for `max_steps` optimizer steps."""

    def __init__(self, sources: dict, mixture: MixtureSchedule, lengths: SequenceLengthSchedule, max_steps: int,
                 gradient_accumulation_steps: int = 1, world_size: int = 1, rank: int = 0, seed: int = 0, *,
                 packing: str = "document", eos_token_id: int, flash_attn_kwargs: bool = False):
        super().__init__()
        if set(mixture.sources or sources) != set(sources):
            raise ValueError(f"mixture sources {mixture.sources} differ from the stream's sources {sorted(sources)}")
        if packing not in PACKING_MODES:
            raise ValueError(f"packing={packing!r}; choose one of {PACKING_MODES}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        self.sources = sources
        self.names = list(sources)
        self.mixture = mixture
        self.lengths = lengths
        self.max_steps = max_steps
        self.accumulation = gradient_accumulation_steps
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.packing = packing
        self.eos_token_id = eos_token_id
        self.flash_attn_kwargs = flash_attn_kwargs
        self.vocab_size = min((getattr(s, "vocab_size", 1 << 62) for s in sources.values()), default=1 << 62)
        for phase in lengths.phases:
            rows = lengths.tokens_per_step // phase.seq_len
            if rows % (gradient_accumulation_steps * world_size):
                raise ValueError(
                    f"{rows} rows of {phase.seq_len} tokens per step cannot be split into "
                    f"{gradient_accumulation_steps} accumulation steps x {world_size} processes; change "
                    "tokens_per_step, the sequence length or the batch layout"
                )
        self._cached_schedule = None
        self._released = [(name, source) for name, source in sources.items() if source.holds_tokens]
        self._restart()

    def _restart(self) -> None:
        self.step = 0  # the next step to produce
        self.offsets = {name: 0 for name in self.names}  # next token of each source
        self.assigned = {name: 0 for name in self.names}  # rows given to each source so far
        self.targets = {name: 0.0 for name in self.names}  # rows each source should have had so far
        self.source_rows = defaultdict(Counter)  # mixture phase -> source -> rows, over the global batch
        self._micro_batches_left = 0

    # ------------------------------------------------------------------ the plan
    def _schedule(self, step: int) -> tuple:
        """(seq_len, rows, weights, names with weight, their weights, mixture phase) of `step`, computed again only
        at phase boundaries and, inside a ramp, every step."""
        cached = self._cached_schedule
        if cached is not None and cached[0] <= step < cached[1]:
            return cached[2]
        total = self.mixture.total_steps
        phase = self.mixture.phase_index(step)
        weights = self.mixture.weights_at(step)
        seq_len = self.lengths.seq_len_at(step)
        names = [name for name in self.names if name in weights]
        schedule = (seq_len, self.lengths.tokens_per_step // seq_len, weights, names, [weights[n] for n in names],
                    phase)
        ends = [_phase_end_step(p.until, total) for p in self.mixture.phases + self.lengths.phases]
        until = min((end for end in ends if end > step), default=step + 1)
        if self.mixture.phases[phase].end_weights is not None:
            until = step + 1  # a ramp: new weights every step
        self._cached_schedule = (step, until, schedule)
        return schedule

    def plan(self) -> StepPlan:
        """The plan of step `self.step` (does not advance)."""
        step = self.step
        seq_len, rows, weights, names, values, phase = self._schedule(step)
        targets, assigned = self.targets, self.assigned
        desired = [targets[name] + rows * weight - assigned[name] for name, weight in zip(names, values, strict=True)]
        counts = [int(value) if value > 0 else 0 for value in desired]  # floor, at least 0
        left = rows - sum(counts)
        if left:
            # the largest shortfalls get the remaining rows (ties: recipe order); a surplus, possible only after an
            # earlier step over-served a source, comes off the smallest
            order = sorted(range(len(names)), key=[c - d for c, d in zip(counts, desired, strict=True)].__getitem__)
            while left > 0:
                for i in order[:left]:
                    counts[i] += 1
                left -= min(left, len(order))
            while left < 0:
                i = next(i for i in reversed(order) if counts[i] > 0)
                counts[i] -= 1
                left += 1
        offsets = self.offsets
        if all(counts):
            return StepPlan(step, seq_len, rows, weights, phase, names, counts, [offsets[n] for n in names], self.seed)
        used = [i for i, count in enumerate(counts) if count]
        return StepPlan(step, seq_len, rows, weights, phase, [names[i] for i in used], [counts[i] for i in used],
                        [offsets[names[i]] for i in used], self.seed)

    def _advance(self, plan: StepPlan) -> None:
        targets = self.targets
        for name, weight in plan.weights.items():
            targets[name] += plan.rows * weight
        realised = self.source_rows[plan.phase]
        for name, count in zip(plan.names, plan.counts, strict=True):
            self.assigned[name] += count
            self.offsets[name] += count * plan.seq_len
            realised[name] += count
        self.step = plan.step + 1

    def seek(self, step: int) -> None:
        """Go to the start of `step` from the beginning, without reading tokens (on-the-fly sources restart)."""
        for source in self.sources.values():
            source.load_state_dict({"epoch": 0, "document": 0, "offset": 0})
        self._restart()
        while self.step < step:
            self._advance(self.plan())

    # ------------------------------------------------------------------ rows
    def build_rows(self, plan: StepPlan, first: int, count: int) -> dict[str, torch.Tensor]:
        """Global rows `first ... first + count - 1` of the planned step, as a batch for the model."""
        ids = np.empty((count, plan.seq_len), dtype=np.int64)
        where = []
        for index in range(count):
            name, offset = plan.row(first + index)
            self.sources[name].read_into(ids[index], offset)
            where.append((name, offset))
        if count and int(ids.max()) >= self.vocab_size:
            self._corrupt(ids, where)
        arrays = pack_rows(ids, self.packing, self.eos_token_id)
        batch = {key: torch.from_numpy(value) for key, value in arrays.items()}
        if self.flash_attn_kwargs:
            batch.update(flash_varlen_kwargs_from_position_ids(batch["position_ids"]))
        return batch

    def _corrupt(self, ids: np.ndarray, where: list) -> None:
        for row, (name, offset) in zip(ids, where, strict=True):
            bad = np.flatnonzero(row >= self.vocab_size)
            if len(bad):
                source = self.sources[name]
                place = source.file_of(offset + int(bad[0])) if hasattr(source, "file_of") else f"source {name!r}"
                raise PreparedDataError(f"{place}: corrupt shard, token id {int(row[bad[0]])} >= vocabulary size "
                                 f"{self.vocab_size}")

    def __iter__(self):
        per_micro_batches = self.accumulation * self.world_size
        while self.step < self.max_steps:
            plan = self.plan()
            per_micro = plan.rows // per_micro_batches
            for name, source in self._released:
                source.release_before(self.offsets[name])  # rows of this step and later start at or after it
            self._advance(plan)
            self._micro_batches_left = self.accumulation
            for micro in range(self.accumulation):
                first = (micro * self.world_size + self.rank) * per_micro
                batch = self.build_rows(plan, first, per_micro)
                self._micro_batches_left -= 1
                yield batch

    def __len__(self) -> int:
        """Micro-batches left for this process."""
        return (self.max_steps - self.step) * self.accumulation

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        if self._micro_batches_left:
            raise RuntimeError(f"the data stream is in the middle of step {self.step - 1}; checkpoint at step ends")
        return {"version": STATE_VERSION, "step": self.step, "offsets": dict(self.offsets),
                "assigned": dict(self.assigned), "targets": dict(self.targets),
                "sources": {name: source.state_dict() for name, source in self.sources.items()},
                "source_rows": {str(k): dict(v) for k, v in self.source_rows.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError("the saved data state comes from an older data stream (per-source packers) and cannot "
                             "be continued exactly by this version; start the run again or use the older version")
        missing = set(self.names) - set(state["offsets"])
        if missing:
            raise ValueError(f"the saved data state has no position for sources {sorted(missing)}")
        self.step = state["step"]
        self.offsets = {name: int(state["offsets"][name]) for name in self.names}
        self.assigned = {name: int(state["assigned"][name]) for name in self.names}
        self.targets = {name: float(state["targets"][name]) for name in self.names}
        for name, source in self.sources.items():
            # a source without a saved cursor restarts from its first document (exact, only slower)
            source.load_state_dict(state.get("sources", {}).get(name) or {"epoch": 0, "document": 0, "offset": 0})
        self.source_rows = defaultdict(Counter, {int(k): Counter(v) for k, v in state.get("source_rows", {}).items()})
        self._micro_batches_left = 0


def realised_proportions(source_rows: dict) -> dict[int, dict[str, float]]:
    """Per mixture phase, the fraction of rows that came from each source."""
    result = {}
    for phase, counts in sorted(source_rows.items()):
        total = sum(counts.values())
        result[int(phase)] = {name: count / total for name, count in sorted(counts.items())}
    return result


def tokens_in_batch(batch: dict) -> int:
    return int(batch["input_ids"].numel())


__all__ = ["PackedBatchStream", "StepPlan", "realised_proportions", "tokens_in_batch"]
