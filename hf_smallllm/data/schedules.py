"""Curricula over training steps: the data mixture and the sequence length.

`MixtureSchedule` is a list of phases, each ending at a fraction of training (`until`), with source weights at its
start and, optionally, different weights at its end (linear ramp in between). Skywork-13B's two stages are

    phases:
      - {until: 0.8, weights: {general: 1.0}}                                   # stage 1: general corpus
      - {until: 1.0, weights: {general: 0.9, stem: 0.1}, end_weights: {general: 0.6, stem: 0.4}}  # STEM 10% -> 40%

`SequenceLengthSchedule` changes the row length at phase boundaries while the number of tokens per optimizer step
stays constant (BTLM-3B-8K: 2,048 tokens x 1,920 rows, then 8,192 x 480 for the last 25%), so the learning-rate
schedule, which counts steps, simply continues.

`StreamStage` is one stage of a staged run (TinyLlama v1.1: general pretraining, domain continual pretraining, a
cooldown with a 4x larger batch): a number of steps with its own mixture, row lengths, tokens per step, gradient
accumulation and packing. The mixture and length phases of a stage count their `until` fractions within the stage.
A run without stages is one stage.
"""

import math
from dataclasses import dataclass, field


def _phase_end_step(until: float, total_steps: int) -> int:
    return round(until * total_steps)


@dataclass
class MixturePhase:
    until: float  # fraction of training at which the phase ends (the last phase ends at 1.0)
    weights: dict[str, float]
    end_weights: dict[str, float] | None = None  # linear ramp from `weights` to these over the phase


@dataclass
class MixtureSchedule:
    phases: list[MixturePhase]
    total_steps: int
    sources: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.phases = [p if isinstance(p, MixturePhase) else MixturePhase(**p) for p in self.phases]
        if not self.phases:
            raise ValueError("the mixture schedule needs at least one phase")
        previous = 0.0
        for number, phase in enumerate(self.phases):
            where = f"mixture phase {number}"
            if not previous < phase.until <= 1.0:
                raise ValueError(f"{where}: until={phase.until} must increase and lie in (0, 1]")
            previous = phase.until
            for weights in filter(None, (phase.weights, phase.end_weights)):
                unknown = set(weights) - set(self.sources) if self.sources else set()
                if unknown:
                    raise ValueError(f"{where}: unknown sources {sorted(unknown)}; known: {self.sources}")
                if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
                    raise ValueError(f"{where}: weights must be >= 0 with a positive sum, got {weights}")
        if self.phases[-1].until != 1.0:
            raise ValueError(f"the last mixture phase must end at until=1.0, not {self.phases[-1].until}")

        # per phase, computed once: (first step, end step, source names sorted, start weights, end weights)
        ends = [_phase_end_step(p.until, self.total_steps) for p in self.phases]
        self._ramps = []
        for index, phase in enumerate(self.phases):
            end_weights = phase.end_weights if phase.end_weights is not None else phase.weights
            names = sorted(set(phase.weights) | set(end_weights))
            self._ramps.append((ends[index - 1] if index else 0, ends[index], names,
                                [phase.weights.get(n, 0.0) for n in names], [end_weights.get(n, 0.0) for n in names]))

    def phase_index(self, step: int) -> int:
        for index, ramp in enumerate(self._ramps):
            if step < ramp[1]:
                return index
        return len(self.phases) - 1

    def phase_weights(self, index: int, step: int) -> tuple[list[str], list[float]]:
        """The source names of phase `index` (sorted) and their normalized weights at `step`, zeros included.

        The sum is `math.fsum`, exact whatever the order: every process, whatever its hash seed, gets the same bits
        (the stream's rows depend on them)."""
        start, end, names, first, last = self._ramps[index]
        if self.phases[index].end_weights is None:
            weights = first
        else:
            fraction = min(max((step - start) / max(end - start - 1, 1), 0.0), 1.0)
            weights = [(1 - fraction) * a + fraction * b for a, b in zip(first, last, strict=True)]
        total = math.fsum(weights)
        return names, [weight / total for weight in weights]

    def weights_at(self, step: int) -> dict[str, float]:
        """Normalized source weights for optimizer step `step` (0-based); sources without weight are left out."""
        names, weights = self.phase_weights(self.phase_index(step), step)
        return {name: weight for name, weight in zip(names, weights, strict=True) if weight > 0}


@dataclass
class LengthPhase:
    until: float
    seq_len: int


@dataclass
class SequenceLengthSchedule:
    """Row length per phase, with `tokens_per_step` constant (rows per step = tokens_per_step / seq_len)."""

    phases: list[LengthPhase]
    total_steps: int
    tokens_per_step: int

    def __post_init__(self):
        self.phases = [p if isinstance(p, LengthPhase) else LengthPhase(**p) for p in self.phases]
        if not self.phases:
            raise ValueError("the sequence-length schedule needs at least one phase")
        previous = 0.0
        for number, phase in enumerate(self.phases):
            if not previous < phase.until <= 1.0:
                raise ValueError(f"sequence-length phase {number}: until={phase.until} must increase in (0, 1]")
            previous = phase.until
            if phase.seq_len < 2 or self.tokens_per_step % phase.seq_len:
                raise ValueError(f"sequence-length phase {number}: seq_len={phase.seq_len} must divide "
                                 f"tokens_per_step={self.tokens_per_step}")
        if self.phases[-1].until != 1.0:
            raise ValueError("the last sequence-length phase must end at until=1.0")

    def seq_len_at(self, step: int) -> int:
        for phase in self.phases:
            if step < _phase_end_step(phase.until, self.total_steps):
                return phase.seq_len
        return self.phases[-1].seq_len

    def rows_at(self, step: int) -> int:
        return self.tokens_per_step // self.seq_len_at(step)

    @property
    def max_seq_len(self) -> int:
        return max(p.seq_len for p in self.phases)


@dataclass
class StreamStage:
    """One stage of the stream: `steps` optimizer steps laid out by its own schedules (their `total_steps` must be
    `steps`: phases count within the stage)."""

    name: str
    steps: int
    mixture: MixtureSchedule
    lengths: SequenceLengthSchedule
    accumulation: int = 1  # micro-batches per optimizer step
    packing: str = "document"
    # consecutive processes that read the same rows (each then keeps its own slice of every row: context
    # parallelism); the world's processes form world / ranks_per_row readers of distinct rows. 1 = each its own rows
    ranks_per_row: int = 1

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"stage {self.name!r}: steps={self.steps} must be at least 1")
        for what in (self.mixture, self.lengths):
            if what.total_steps != self.steps:
                raise ValueError(f"stage {self.name!r}: its schedules must count {self.steps} steps, not "
                                 f"{what.total_steps}")
        if self.accumulation < 1:
            raise ValueError(f"stage {self.name!r}: accumulation={self.accumulation} must be at least 1")
        if self.ranks_per_row < 1:
            raise ValueError(f"stage {self.name!r}: ranks_per_row={self.ranks_per_row} must be at least 1")


__all__ = ["LengthPhase", "MixturePhase", "MixtureSchedule", "SequenceLengthSchedule", "StreamStage"]
