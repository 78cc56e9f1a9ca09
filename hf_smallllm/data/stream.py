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
   readers` micro-batches in order; reader `r` builds only rows `(micro x readers + r) x per_micro ...` and reads
   only their tokens. Without context parallelism every process is a reader (`readers = world_size`, `r = rank`).
   A stage whose rows are split over `ranks_per_row = P` processes (context parallelism: each keeps a slice of every
   row) has `world_size / P` readers: processes `g x P ... (g + 1) x P - 1` are reader `g` and all build its rows.

So a run on N processes sees exactly the rows of a 1-process run with the same global batch, bit for bit, and a
process's work per step is its own rows plus a few operations per source.

Stages (`StreamStage`, e.g. TinyLlama v1.1's general, domain and cooldown stages) only change what a step looks
like: from the first step of a stage on, its tokens per step, row lengths, mixture, accumulation, packing and ranks
per row apply.
The bookkeeping above (offsets, cumulative targets) runs on across stage boundaries, so a source that returns in a
later stage continues where it stopped, and a checkpoint at any step (a boundary included) resumes exactly.

Rows become `input_ids`, `labels` and `position_ids` in `pack_rows` (`document` packing: positions restart after
every EOS; `causal`).

`state_dict()` at a step boundary records the next step, each source's offset, cumulative row counts and targets,
and each on-the-fly source's document cursor; `load_state_dict()` continues with exactly the rows an uninterrupted
run would have seen next. `seek(step)` gets there from the start without reading any tokens.
"""

import math
from bisect import bisect_right
from collections import Counter
from itertools import accumulate
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import IterableDataset

from ..models.modeling_smallllm import flash_varlen_kwargs_from_position_ids
from .packing import PACKING_MODES, pack_rows
from .schedules import MixtureSchedule, SequenceLengthSchedule, StreamStage, _phase_end_step
from .shards import PreparedDataError

STATE_VERSION = 2
_PLAN_AHEAD = 16  # steps planned in one go before their rows are built (see _plans_ahead)
_MASK64 = (1 << 64) - 1


def _mix64(value: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of an integer."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


class StageLayout(NamedTuple):
    """What a stage's steps look like on this stream (`PackedBatchStream.layouts`)."""

    name: str
    tokens_per_step: int
    seq_lens: list[int]  # the row length of each of its sequence-length phases
    accumulation: int  # micro-batches per optimizer step
    ranks_per_row: int  # processes that read the same rows (context parallelism); 1 = each process its own


class StepPlan:
    """Where the rows of one step come from (see the module docstring). Sources are indices into the stream's
    source list (recipe order)."""

    __slots__ = ("accumulation", "bases", "block_ends", "counts", "multiplier", "packing", "phase", "ranks_per_row",
                 "rows", "seq_len", "shift", "sources", "step", "weighted", "weights")

    def __init__(self, step, seq_len, rows, weighted, weights, phase, sources, counts, bases, seed, accumulation=1,
                 packing="document", ranks_per_row=1):
        self.step, self.seq_len, self.rows, self.phase = step, seq_len, rows, phase
        # of the step's stage
        self.accumulation, self.packing, self.ranks_per_row = accumulation, packing, ranks_per_row
        self.weighted, self.weights = weighted, weights  # sources with a weight this step, and their weights
        self.sources = sources  # sources with rows this step
        self.counts = counts
        self.bases = bases
        self.block_ends = list(accumulate(counts))
        hashed = _mix64((seed & _MASK64) * 0x100000001B3 + step)
        self.shift = hashed % rows
        multiplier = 1 + (hashed >> 20) % (rows - 1) if rows > 1 else 1
        while math.gcd(multiplier, rows) != 1:
            multiplier += 1
        self.multiplier = multiplier

    def row(self, global_row: int) -> tuple[int, int]:
        """(source index, token offset) of global row `global_row` of the step."""
        slot = (self.multiplier * global_row + self.shift) % self.rows
        block = bisect_right(self.block_ends, slot)
        start = self.block_ends[block] - self.counts[block]
        return self.sources[block], self.bases[block] + (slot - start) * self.seq_len


class PackedBatchStream(IterableDataset):
    """Micro-batches of this process (`rank` of `world_size` processes) for `max_steps` optimizer steps.

    `stages` lays the run out in stages (their steps sum to `max_steps`); without it the run is one stage of
    `mixture`, `lengths`, `gradient_accumulation_steps` and `packing` in which every process reads its own rows.
    `mixture`, `lengths` and `accumulation` name the first stage's."""

    def __init__(self, sources: dict, mixture: MixtureSchedule | None, lengths: SequenceLengthSchedule | None,
                 max_steps: int, gradient_accumulation_steps: int = 1, world_size: int = 1, rank: int = 0,
                 seed: int = 0, *, packing: str = "document", eos_token_id: int, flash_attn_kwargs: bool = False,
                 stages: list[StreamStage] | None = None):
        super().__init__()
        if stages is None:
            stages = [StreamStage("main", max_steps, mixture, lengths, gradient_accumulation_steps, packing)]
        if sum(stage.steps for stage in stages) != max_steps:
            raise ValueError(f"the stages' steps sum to {sum(stage.steps for stage in stages)}, not max_steps="
                             f"{max_steps}")
        for stage in stages:
            if set(stage.mixture.sources or sources) != set(sources):
                raise ValueError(f"stage {stage.name!r}: mixture sources {stage.mixture.sources} differ from the "
                                 f"stream's sources {sorted(sources)}")
            if stage.packing not in PACKING_MODES:
                raise ValueError(f"stage {stage.name!r}: packing={stage.packing!r}; choose one of {PACKING_MODES}")
            if world_size % stage.ranks_per_row:
                raise ValueError(f"stage {stage.name!r}: ranks_per_row={stage.ranks_per_row} does not divide the "
                                 f"{world_size} process(es)")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        self.sources = sources
        self.names = list(sources)
        self.stages = stages
        self._stage_starts = [0, *accumulate(stage.steps for stage in stages)][:-1]
        # mixture phases are numbered across stages (the realised proportions are kept per numbered phase)
        self._phase_offsets = [0, *accumulate(len(stage.mixture.phases) for stage in stages)][:-1]
        self.mixture = stages[0].mixture
        self.lengths = stages[0].lengths
        self.max_steps = max_steps
        self.accumulation = stages[0].accumulation
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.packing = stages[0].packing
        self.eos_token_id = eos_token_id
        self.flash_attn_kwargs = flash_attn_kwargs
        self.vocab_size = min((getattr(s, "vocab_size", 1 << 62) for s in sources.values()), default=1 << 62)
        for stage in stages:
            readers = world_size // stage.ranks_per_row
            for phase in stage.lengths.phases:
                rows = stage.lengths.tokens_per_step // phase.seq_len
                if rows % (stage.accumulation * readers):
                    where = f"stage {stage.name!r}: " if len(stages) > 1 else ""
                    who = (f"{readers} groups of {stage.ranks_per_row} processes reading the same rows"
                           if stage.ranks_per_row > 1 else f"{readers} processes")
                    raise ValueError(
                        f"{where}{rows} rows of {phase.seq_len} tokens per step cannot be split into "
                        f"{stage.accumulation} accumulation steps x {who}; change "
                        "tokens_per_step, the sequence length or the batch layout"
                    )
        self._cached_schedule = None
        self._source_list = list(sources.values())
        self._released = [(index, source) for index, source in enumerate(self._source_list) if source.holds_tokens]
        self._restart()

    def _restart(self) -> None:
        # per source, in recipe order (lists, not dicts: the plan runs every step on every process)
        self.step = 0  # the next step to produce
        self._offsets = [0] * len(self.names)  # next token of each source
        self._assigned = [0] * len(self.names)  # rows given to each source so far
        self._targets = [0.0] * len(self.names)  # rows each source should have had so far
        self._realised: dict[int, list[int]] = {}  # mixture phase -> rows per source, over the global batch
        self._micro_batches_left = 0

    @property
    def offsets(self) -> dict[str, int]:
        """The next token of each source."""
        return dict(zip(self.names, self._offsets, strict=True))

    @property
    def source_rows(self) -> dict[int, Counter]:
        """Mixture phase -> source -> rows so far, over the global batch."""
        return {phase: Counter({name: count for name, count in zip(self.names, counts, strict=True) if count})
                for phase, counts in sorted(self._realised.items())}

    # ------------------------------------------------------------------ the plan
    def stage_index(self, step: int) -> int:
        """The stage that optimizer step `step` (0-based) belongs to."""
        return max(bisect_right(self._stage_starts, step) - 1, 0)

    def accumulation_at(self, step: int) -> int:
        """Micro-batches of optimizer step `step` (0-based)."""
        return self.stages[self.stage_index(step)].accumulation

    def ranks_per_row_at(self, step: int) -> int:
        """Processes that read the same rows in optimizer step `step` (0-based): the context-parallel size of its
        stage."""
        return self.stages[self.stage_index(step)].ranks_per_row

    @property
    def layouts(self) -> list[StageLayout]:
        """Per stage: its name, tokens per step, row lengths of its phases, accumulation and ranks per row."""
        return [StageLayout(stage.name, stage.lengths.tokens_per_step,
                            [phase.seq_len for phase in stage.lengths.phases], stage.accumulation,
                            stage.ranks_per_row) for stage in self.stages]

    def _schedule(self, step: int) -> tuple:
        """(seq_len, rows, sources with weight, their weights, mixture phase, stage) of `step`. Everything but the
        weights of a ramp is computed again only at phase and stage boundaries."""
        cached = self._cached_schedule
        if cached is None or not cached[0] <= step < cached[1]:
            index = self.stage_index(step)
            stage, start = self.stages[index], self._stage_starts[index]
            local = step - start  # the stage's phases count their steps from its start
            ends = [start + _phase_end_step(p.until, stage.steps) for p in stage.mixture.phases + stage.lengths.phases]
            ends.append(start + stage.steps)
            local_phase = stage.mixture.phase_index(local)
            seq_len = stage.lengths.seq_len_at(local)
            names, _ = stage.mixture.phase_weights(local_phase, local)
            # (stream index, index in the phase's sorted names) of each source the phase names, in recipe order
            order = [(i, names.index(name)) for i, name in enumerate(self.names) if name in names]
            ramp = stage.mixture.phases[local_phase].end_weights is not None
            fixed = None if ramp else self._weighted(stage.mixture, local_phase, local, order)
            cached = self._cached_schedule = (step, min((end for end in ends if end > step), default=step + 1),
                                              seq_len, local_phase, order, fixed, index)
        _, _, seq_len, local_phase, order, fixed, index = cached
        stage = self.stages[index]
        weighted, weights = fixed or self._weighted(stage.mixture, local_phase, step - self._stage_starts[index],
                                                    order)
        return (seq_len, stage.lengths.tokens_per_step // seq_len, weighted, weights,
                self._phase_offsets[index] + local_phase, stage)

    @staticmethod
    def _weighted(mixture: MixtureSchedule, phase: int, step: int, order: list) -> tuple[list[int], list[float]]:
        _, values = mixture.phase_weights(phase, step)
        used = [(i, values[k]) for i, k in order if values[k] > 0]
        return [i for i, _ in used], [value for _, value in used]

    def plan(self) -> StepPlan:
        """The plan of step `self.step` (does not advance)."""
        step = self.step
        seq_len, rows, weighted, weights, phase, stage = self._schedule(step)
        targets, assigned = self._targets, self._assigned
        desired = [targets[i] + rows * weight - assigned[i] for i, weight in zip(weighted, weights, strict=True)]
        counts = [int(value) if value > 0 else 0 for value in desired]  # floor, at least 0
        left = rows - sum(counts)
        if left:
            # the largest shortfalls get the remaining rows (ties: recipe order); a surplus, possible only after an
            # earlier step over-served a source, comes off the smallest
            order = sorted(range(len(counts)), key=[c - d for c, d in zip(counts, desired, strict=True)].__getitem__)
            while left > 0:
                for k in order[:left]:
                    counts[k] += 1
                left -= min(left, len(order))
            while left < 0:
                k = next(k for k in reversed(order) if counts[k] > 0)
                counts[k] -= 1
                left += 1
        offsets = self._offsets
        if all(counts):
            return StepPlan(step, seq_len, rows, weighted, weights, phase, weighted, counts,
                            [offsets[i] for i in weighted], self.seed, stage.accumulation, stage.packing,
                            stage.ranks_per_row)
        used = [k for k, count in enumerate(counts) if count]
        return StepPlan(step, seq_len, rows, weighted, weights, phase, [weighted[k] for k in used],
                        [counts[k] for k in used], [offsets[weighted[k]] for k in used], self.seed,
                        stage.accumulation, stage.packing, stage.ranks_per_row)

    def _advance(self, plan: StepPlan) -> None:
        targets, assigned, offsets = self._targets, self._assigned, self._offsets
        rows, seq_len = plan.rows, plan.seq_len
        for i, weight in zip(plan.weighted, plan.weights, strict=True):
            targets[i] += rows * weight
        realised = self._realised.get(plan.phase)
        if realised is None:
            realised = self._realised[plan.phase] = [0] * len(self.names)
        for i, count in zip(plan.sources, plan.counts, strict=True):
            assigned[i] += count
            offsets[i] += count * seq_len
            realised[i] += count
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
        sources = self._source_list
        for index in range(count):
            source, offset = plan.row(first + index)
            sources[source].read_into(ids[index], offset)
            where.append((self.names[source], offset))
        if count and int(ids.max()) >= self.vocab_size:
            self._corrupt(ids, where)
        arrays = pack_rows(ids, plan.packing, self.eos_token_id)
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

    def _plans_ahead(self, count: int) -> list[tuple[StepPlan, tuple]]:
        """The plans of the next `count` steps, each with the stream's position after it, leaving the stream where
        it is. Planning a run of steps in one go and then building their rows keeps each loop's code and data in the
        CPU caches (at 4 micro-batches per step, interleaving them cost several percent of delivery)."""
        saved = self._position()
        plans = []
        for _ in range(min(count, self.max_steps - self.step)):
            plan = self.plan()
            self._advance(plan)
            plans.append((plan, self._position()))
        self._set_position(saved)
        return plans

    def _position(self) -> tuple:
        # copies: _advance changes the lists in place
        return (self.step, self._offsets[:], self._assigned[:], self._targets[:],
                {phase: rows[:] for phase, rows in self._realised.items()})

    def _set_position(self, position: tuple) -> None:
        # taken over, not copied: every position is set once (a plan-ahead's start, or a step's end)
        self.step, self._offsets, self._assigned, self._targets, self._realised = position

    def __iter__(self):
        while self.step < self.max_steps:
            for plan, after in self._plans_ahead(_PLAN_AHEAD):
                # the processes of a context-parallel group read the same rows: they are one reader
                readers, reader = self.world_size // plan.ranks_per_row, self.rank // plan.ranks_per_row
                per_micro = plan.rows // (plan.accumulation * readers)
                for index, source in self._released:
                    source.release_before(self._offsets[index])  # rows of this step and later start at or after it
                self._set_position(after)
                self._micro_batches_left = plan.accumulation
                for micro in range(plan.accumulation):
                    first = (micro * readers + reader) * per_micro
                    batch = self.build_rows(plan, first, per_micro)
                    self._micro_batches_left -= 1
                    yield batch

    def __len__(self) -> int:
        """Micro-batches left for this process."""
        left = 0
        for stage, start in zip(self.stages, self._stage_starts, strict=True):
            left += max(0, start + stage.steps - max(self.step, start)) * stage.accumulation
        return left

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        if self._micro_batches_left:
            raise RuntimeError(f"the data stream is in the middle of step {self.step - 1}; checkpoint at step ends")
        return {"version": STATE_VERSION, "step": self.step, "offsets": self.offsets,
                "assigned": dict(zip(self.names, self._assigned, strict=True)),
                "targets": dict(zip(self.names, self._targets, strict=True)),
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
        self._offsets = [int(state["offsets"][name]) for name in self.names]
        self._assigned = [int(state["assigned"][name]) for name in self.names]
        self._targets = [float(state["targets"][name]) for name in self.names]
        for name, source in self.sources.items():
            # a source without a saved cursor restarts from its first document (exact, only slower)
            source.load_state_dict(state.get("sources", {}).get(name) or {"epoch": 0, "document": 0, "offset": 0})
        self._realised = {int(phase): [int(rows.get(name, 0)) for name in self.names]
                          for phase, rows in state.get("source_rows", {}).items()}
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


__all__ = ["PackedBatchStream", "StageLayout", "StepPlan", "realised_proportions", "tokens_in_batch"]
