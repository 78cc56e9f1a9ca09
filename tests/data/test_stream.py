"""The batch stream: mixture proportions per phase, constant tokens per step across a length switch, process
slicing equal to one process (per stage also when a stage's rows are shared by context-parallel groups), and exact
resume at step boundaries (on-the-fly sources; prepared shards are tested in test_prepared.py)."""

import math

import pytest
import torch

from hf_smallllm.data import (
    DocumentSource,
    MixtureSchedule,
    OnTheFlyTokens,
    PackedBatchStream,
    SequenceLengthSchedule,
    StreamStage,
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


def staged_stream(tokenizer, ranks_per_row=(1, 2), world_size=1, rank=0, tokens_per_step=512, seq_lens=(64, 128)):
    """Two stages of 2 steps at `tokens_per_step`: rows of `seq_lens[0]` tokens in 2 micro-batches per step, then
    rows of `seq_lens[1]` in 1, each stage's rows shared by `ranks_per_row` consecutive processes."""
    sources = {name: OnTheFlyTokens(DocumentSource(name, path, split_by=split), tokenizer)
               for name, (path, split) in SOURCES.items()}
    weights = [{"until": 1.0, "weights": {"general": 0.5, "stem": 0.5}}]
    stages = [StreamStage(f"stage{index}", 2, MixtureSchedule(weights, 2),
                          SequenceLengthSchedule([{"until": 1.0, "seq_len": seq_len}], 2, tokens_per_step),
                          accumulation=2 if index == 0 else 1, ranks_per_row=size)
              for index, (seq_len, size) in enumerate(zip(seq_lens, ranks_per_row, strict=True))]
    return PackedBatchStream(sources, None, None, 4, world_size=world_size, rank=rank,
                             eos_token_id=tokenizer.eos_token_id, stages=stages)


def test_a_stage_s_context_parallel_groups_read_the_same_rows(corpus_tokenizer):
    """On 4 processes, stage 1 (8 rows of 64 in 2 micro-batches) gives each process its own row per micro-batch;
    stage 2's 4 rows of 128 are shared by pairs of processes (ranks 0-1 read group 0's 2 rows, ranks 2-3 group 1's),
    and together they are the rows of one process reading both stages whole, in order."""
    single = staged_stream(corpus_tokenizer, ranks_per_row=(1, 1))
    ranks = [staged_stream(corpus_tokenizer, world_size=4, rank=rank) for rank in range(4)]
    assert [ranks[0].ranks_per_row_at(step) for step in range(4)] == [1, 1, 2, 2]
    assert [layout.ranks_per_row for layout in ranks[0].layouts] == [1, 2]
    whole = iter(single)
    parts = [iter(stream) for stream in ranks]
    for step in range(4):
        if step < 2:  # micro-batch m of rank r holds global row m x 4 + r
            expected = torch.cat([next(whole)["input_ids"] for _ in range(2)])
            got = [[next(part)["input_ids"] for _ in range(2)] for part in parts]
            assert all(batch.shape == (1, 64) for batches in got for batch in batches)
            assert torch.equal(torch.cat([got[r][m] for m in range(2) for r in range(4)]), expected), step
        else:  # group g (ranks 2g, 2g + 1) reads global rows 2g, 2g + 1
            expected = next(whole)["input_ids"]
            got = [next(part)["input_ids"] for part in parts]
            assert all(batch.shape == (2, 128) for batch in got)
            assert torch.equal(got[0], got[1]) and torch.equal(got[2], got[3]), step
            assert torch.equal(torch.cat([got[0], got[2]]), expected), step
    # a process resumed at the switch (step 2) or inside the shared stage (step 3) continues with the same rows
    straight = [batch["input_ids"] for batch in staged_stream(corpus_tokenizer, world_size=4, rank=3)]
    for stop, done in ((2, 4), (3, 5)):  # micro-batches before the stop: 2 per step of stage 1, then 1
        reference = staged_stream(corpus_tokenizer, world_size=4, rank=3)
        reference.seek(stop)
        resumed = staged_stream(corpus_tokenizer, world_size=4, rank=3)
        resumed.load_state_dict(reference.state_dict())
        rest = [batch["input_ids"] for batch in resumed]
        assert len(rest) == len(straight) - done
        assert all(torch.equal(a, b) for a, b in zip(rest, straight[done:], strict=True)), stop


def test_shared_rows_that_do_not_divide_are_refused(corpus_tokenizer):
    with pytest.raises(ValueError, match=r"stage 'stage1': ranks_per_row=2 does not divide the 3 process\(es\)"):
        staged_stream(corpus_tokenizer, world_size=3)
    # one row of 512 per step: 2 groups of 2 cannot share it out; one group of 4 can
    with pytest.raises(ValueError, match=r"stage 'stage1': 1 rows of 512 tokens per step cannot be split into 1 "
                                         r"accumulation steps x 2 groups of 2 processes reading the same rows"):
        staged_stream(corpus_tokenizer, world_size=4, seq_lens=(64, 512))
    staged_stream(corpus_tokenizer, ranks_per_row=(1, 4), world_size=4, seq_lens=(64, 512))
