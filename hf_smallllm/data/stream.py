"""The pretraining data stream: mixed, packed, curriculum-scheduled micro-batches, resumable at any step.

For optimizer step `s` the stream builds the step's global batch: `tokens_per_step / seq_len(s)` rows, each drawn
from a source chosen with the mixture weights of step `s` (by a random generator seeded with `(seed, s, row)`, so
the choice needs no stored state) and packed by that source's `DocumentPacker`. The rows are then cut into
`gradient_accumulation_steps x world_size` micro-batches; this process yields its own (`rank`). Every process
builds the same global batch, so a run on N processes sees exactly the rows of a 1-process run with the same
global batch.

`state_dict()` at a step boundary records the next step and every packer's position; `load_state_dict()` makes the
stream continue with exactly the rows an uninterrupted run would have seen next.
"""

import random
from collections import Counter, defaultdict

from torch.utils.data import IterableDataset

from .collator import PackedCollator
from .packing import DocumentPacker, SourceExhausted
from .schedules import MixtureSchedule, SequenceLengthSchedule


class PackedBatchStream(IterableDataset):
    def __init__(self, packers: dict[str, DocumentPacker], mixture: MixtureSchedule,
                 lengths: SequenceLengthSchedule, max_steps: int, gradient_accumulation_steps: int = 1,
                 world_size: int = 1, rank: int = 0, seed: int = 0, collator: PackedCollator | None = None):
        super().__init__()
        if set(mixture.sources or packers) != set(packers):
            raise ValueError(f"mixture sources {mixture.sources} differ from the packers {sorted(packers)}")
        self.packers = packers
        self.mixture = mixture
        self.lengths = lengths
        self.max_steps = max_steps
        self.accumulation = gradient_accumulation_steps
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.collator = collator or PackedCollator()
        for phase in lengths.phases:
            rows = lengths.tokens_per_step // phase.seq_len
            if rows % (gradient_accumulation_steps * world_size):
                raise ValueError(
                    f"{rows} rows of {phase.seq_len} tokens per step cannot be split into "
                    f"{gradient_accumulation_steps} accumulation steps x {world_size} processes; change "
                    "tokens_per_step, the sequence length or the batch layout"
                )
        self.step = 0  # the next step to produce
        self._micro_batches_left = 0
        self.source_rows = defaultdict(Counter)  # mixture phase -> source -> rows, over the global batch

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        if self._micro_batches_left:
            raise RuntimeError(f"the data stream is in the middle of step {self.step - 1}; checkpoint at step ends")
        return {"step": self.step, "packers": {name: p.state_dict() for name, p in self.packers.items()},
                "source_rows": {str(k): dict(v) for k, v in self.source_rows.items()}}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.packers) - set(state["packers"])
        if missing:
            raise ValueError(f"the saved data state has no position for sources {sorted(missing)}")
        self.step = state["step"]
        for name, packer in self.packers.items():
            packer.load_state_dict(state["packers"][name])
        self.source_rows = defaultdict(Counter, {int(k): Counter(v) for k, v in state.get("source_rows", {}).items()})
        self._micro_batches_left = 0

    # ------------------------------------------------------------------ rows
    def _choose_source(self, step: int, row: int, weights: dict[str, float]) -> str:
        draw = random.Random(f"{self.seed}:{step}:{row}").random()
        cumulative = 0.0
        for name, weight in weights.items():
            cumulative += weight
            if draw < cumulative:
                return name
        return next(reversed(weights))

    def global_rows(self, step: int) -> list:
        """The rows of step `step` for all processes (advances the packers)."""
        weights = self.mixture.weights_at(step)
        seq_len = self.lengths.seq_len_at(step)
        phase = self.mixture.phase_index(step)
        rows = []
        for row in range(self.lengths.rows_at(step)):
            source = self._choose_source(step, row, weights)
            try:
                rows.append(self.packers[source].next_row(seq_len))
            except SourceExhausted:
                raise RuntimeError(f"source {source!r} ran out of documents at step {step}; let it cycle "
                                   "(repeat epochs) or give it more data") from None
            self.source_rows[phase][source] += 1
        return rows

    def __iter__(self):
        while self.step < self.max_steps:
            rows = self.global_rows(self.step)
            per_micro = len(rows) // (self.accumulation * self.world_size)
            self.step += 1
            self._micro_batches_left = self.accumulation
            for micro in range(self.accumulation):
                start = (micro * self.world_size + self.rank) * per_micro
                self._micro_batches_left -= 1
                yield self.collator(rows[start : start + per_micro])

    def __len__(self) -> int:
        """Micro-batches left for this process."""
        return (self.max_steps - self.step) * self.accumulation


def realised_proportions(source_rows: dict) -> dict[int, dict[str, float]]:
    """Per mixture phase, the fraction of rows that came from each source."""
    result = {}
    for phase, counts in sorted(source_rows.items()):
        total = sum(counts.values())
        result[int(phase)] = {name: count / total for name, count in sorted(counts.items())}
    return result


def tokens_in_batch(batch: dict) -> int:
    return int(batch["input_ids"].numel())


__all__ = ["PackedBatchStream", "realised_proportions", "tokens_in_batch"]
