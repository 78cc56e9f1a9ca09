"""The batch stream: mixture proportions per phase, constant tokens per step across a length switch, process
slicing equal to one process, and exact resume at step boundaries (on-the-fly sources; prepared shards are tested
in test_prepared.py)."""

import math

import pytest
import torch

from hf_smallllm.data import (
    DocumentSource,
    MixtureSchedule,
    OnTheFlyTokens,
    PackedBatchStream,
    SequenceLengthSchedule,
    realised_proportions,
)

SOURCES = {
    "general": ("bundled:en_kjv.txt", "line"),
    "stem": ("bundled:code_python.jsonl", "file"),
}
# Skywork-style: stage 1 general only; stage 2 STEM share ramping from 10% to 40%
SKYWORK_PHASES = [
    {"until": 0.5, "weights": {"general": 1.0}},
    {"until": 1.0, "weights": {"general": 0.9, "stem": 0.1}, "end_weights": {"general": 0.6, "stem": 0.4}},
]


def make_stream(tokenizer, steps=40, phases=SKYWORK_PHASES, lengths=None, tokens_per_step=512, accumulation=1,
                world_size=1, rank=0, seed=0):
    sources = {name: OnTheFlyTokens(DocumentSource(name, path, split_by=split), tokenizer)
               for name, (path, split) in SOURCES.items()}
    mixture = MixtureSchedule(phases, total_steps=steps, sources=list(sources))
    lengths = SequenceLengthSchedule(lengths or [{"until": 1.0, "seq_len": 64}], steps, tokens_per_step)
    return PackedBatchStream(sources, mixture, lengths, steps, accumulation, world_size, rank, seed,
                             eos_token_id=tokenizer.eos_token_id)


def test_mixture_weights_ramp_linearly():
    schedule = MixtureSchedule(SKYWORK_PHASES, total_steps=100, sources=["general", "stem"])
    assert schedule.weights_at(0) == {"general": 1.0}
    assert schedule.weights_at(50) == pytest.approx({"general": 0.9, "stem": 0.1})
    assert schedule.weights_at(99) == pytest.approx({"general": 0.6, "stem": 0.4})
    assert schedule.weights_at(75)["stem"] == pytest.approx(0.1 + 0.3 * 25 / 49)


def test_mixture_weights_do_not_depend_on_the_order_sources_are_listed():
    # every process must get the same bits (its rows depend on them), and a set's order changes with the hash seed
    weights = {"a": 0.1, "b": 0.2, "c": 0.7, "d": 0.3}
    ends = {"a": 0.7, "b": 0.05, "c": 0.15, "d": 0.1}
    listed = MixtureSchedule([{"until": 1.0, "weights": weights, "end_weights": ends}], 50)
    reversed_ = MixtureSchedule([{"until": 1.0, "weights": dict(reversed(weights.items())),
                                  "end_weights": dict(reversed(ends.items()))}], 50)
    for step in range(50):
        assert listed.weights_at(step) == reversed_.weights_at(step)
        assert math.fsum(listed.weights_at(step).values()) == pytest.approx(1.0, abs=1e-15)


def test_realised_proportions_match_the_recipe(corpus_tokenizer):
    stream = make_stream(corpus_tokenizer, steps=60, tokens_per_step=64 * 32)
    for _ in stream:
        pass
    proportions = realised_proportions(stream.source_rows)
    assert proportions[0] == {"general": 1.0}
    # phase 2: the average STEM weight is 25% of 30 steps x 32 rows; rows are allotted, not sampled: within a row
    assert proportions[1]["stem"] == pytest.approx(0.25, abs=1 / 960)
    early = [stream.mixture.weights_at(s).get("stem", 0) for s in range(30, 35)]
    late = [stream.mixture.weights_at(s).get("stem", 0) for s in range(55, 60)]
    assert max(early) < 0.15 < 0.35 < min(late)


def test_length_switch_keeps_tokens_per_step(corpus_tokenizer):
    lengths = [{"until": 0.75, "seq_len": 32}, {"until": 1.0, "seq_len": 128}]  # BTLM-style 4x switch
    stream = make_stream(corpus_tokenizer, steps=8, lengths=lengths, tokens_per_step=512, accumulation=2)
    shapes = [tuple(batch["input_ids"].shape) for batch in stream]
    assert shapes[:12] == [(8, 32)] * 12 and shapes[12:] == [(2, 128)] * 4  # rows / 4 when length x 4
    assert {rows * length * 2 for rows, length in shapes} == {512}


def test_processes_see_their_slice_of_the_same_global_batch(corpus_tokenizer):
    single = list(make_stream(corpus_tokenizer, steps=3, accumulation=2))
    ranks = [list(make_stream(corpus_tokenizer, steps=3, accumulation=1, world_size=2, rank=r)) for r in (0, 1)]
    for step in range(3):
        one_process = torch.cat([single[2 * step]["input_ids"], single[2 * step + 1]["input_ids"]])
        two_processes = torch.cat([ranks[0][step]["input_ids"], ranks[1][step]["input_ids"]])
        assert torch.equal(one_process, two_processes)


def test_stream_resumes_exactly_at_a_step_boundary(corpus_tokenizer):
    reference = [b["input_ids"] for b in make_stream(corpus_tokenizer, steps=10, accumulation=2)]
    stream = make_stream(corpus_tokenizer, steps=10, accumulation=2)
    iterator = iter(stream)
    for _ in range(8):  # four full steps
        next(iterator)
    state = stream.state_dict()
    assert state["step"] == 4
    resumed = make_stream(corpus_tokenizer, steps=10, accumulation=2)
    resumed.load_state_dict(state)
    rest = [b["input_ids"] for b in resumed]
    assert len(rest) == 12 and all(torch.equal(a, b) for a, b in zip(rest, reference[8:], strict=True))
    next(iterator)  # half-way through step 5
    with pytest.raises(RuntimeError, match="middle of step"):
        stream.state_dict()


def test_stream_rejects_layouts_that_do_not_divide(corpus_tokenizer):
    with pytest.raises(ValueError, match="cannot be split"):
        make_stream(corpus_tokenizer, tokens_per_step=64 * 3, accumulation=2)
    with pytest.raises(ValueError, match="unknown sources"):
        MixtureSchedule([{"until": 1.0, "weights": {"web": 1.0}}], 10, sources=["general"])
    with pytest.raises(ValueError, match="must divide"):
        SequenceLengthSchedule([{"until": 1.0, "seq_len": 100}], 10, 512)
