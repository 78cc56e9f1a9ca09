"""Staged recipes: each stage's batch, row length, mixture, packing and lr segment take effect from its first step;
a run stopped and resumed just before, at, or just after a stage boundary ends bit for bit like the straight run;
mistakes in a stage name the field in one line."""

import copy

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_smallllm.train import load_recipe, read_metrics, run_pretraining
from hf_smallllm.train.build import build_stream
from hf_smallllm.train.lr_schedules import staged_lr_multiplier
from hf_smallllm.train.recipe import RecipeError

from .conftest import tiny_recipe_for

BOUNDARY = 3  # stage 1 is steps 1-3, stage 2 steps 4-6


def staged(tiny_recipe):
    """The tiny recipe in two stages: KJV only at 4 x 64 tokens with document packing, then an even mix at
    4 x 128 tokens per step (twice the batch), 1 micro-batch, causal packing and a constant lr segment."""
    recipe = copy.deepcopy(tiny_recipe)
    del recipe["training"]["max_steps"]
    recipe["training"]["save_steps"] = 1
    recipe["stages"] = [
        {"name": "general", "steps": BOUNDARY,
         "data": {"mixture": [{"until": 1.0, "weights": {"kjv": 1.0, "shakespeare": 0.0}}]}},
        {"name": "cooldown", "steps": 3,
         "data": {"tokens_per_step": 512, "seq_len": 128, "packing": "causal"},
         "training": {"gradient_accumulation_steps": 1},
         "optimizer": {"lr": 1.0e-3}, "schedule": {"type": "constant", "warmup_steps": 0}},
    ]
    return recipe


class Stop(Exception):
    pass


class StopAtStep(TrainerCallback):
    """A killed process: raises when step `step + 1` begins, after checkpoint-`step` was written."""

    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Stop


def losses(result):
    return {r["step"]: r["loss"] for r in read_metrics(result.metrics_path) if "loss" in r}


@pytest.fixture(scope="module")
def straight(tokenizer_dir, tmp_path_factory):
    """The staged tiny recipe trained straight through (shared by the tests that compare against it)."""
    return run_pretraining(staged(tiny_recipe_for(tokenizer_dir, tmp_path_factory.mktemp("straight"))))


def test_each_stage_lays_out_its_own_steps(tiny_recipe, corpus_tokenizer):
    recipe = load_recipe(staged(tiny_recipe))
    assert recipe.training.max_steps == 6 and [s.first_step for s in recipe.stage_plans] == [0, 3]
    stream = build_stream(recipe, corpus_tokenizer)
    batches = iter(stream)
    for step in range(6):
        micro = [next(batches) for _ in range(stream.accumulation_at(step))]
        shapes = [tuple(batch["input_ids"].shape) for batch in micro]
        if step < BOUNDARY:  # 256 tokens per step: 2 micro-batches of 2 rows x 64, positions restart per document
            assert shapes == [(2, 64), (2, 64)]
        else:  # 512 tokens per step: 1 micro-batch of 4 rows x 128, plain causal positions
            assert shapes == [(4, 128)]
            assert torch.equal(micro[0]["position_ids"], torch.arange(128).expand(4, 128))
    rows = stream.source_rows
    assert rows == {0: {"kjv": 12}, 1: {"kjv": 6, "shakespeare": 6}}  # per stage's mixture phase


def test_lr_follows_the_run_schedule_then_the_stage_segment(straight):
    recipe, result = straight.recipe, straight
    lrs = [r["lr"] for r in read_metrics(result.metrics_path) if "lr" in r]
    # stage 1 follows the run-wide cosine over 6 steps (warmup 2, peak 3e-3); stage 2 runs its constant 1e-3
    expected = [3e-3 * staged_lr_multiplier(step, recipe.schedule, 6) for step in range(BOUNDARY)]
    assert lrs[:BOUNDARY] == pytest.approx(expected) and lrs[BOUNDARY:] == pytest.approx([1e-3] * 3)
    assert result.tokens_seen == 3 * 256 + 3 * 512


@pytest.mark.parametrize("stop_at", [BOUNDARY - 1, BOUNDARY, BOUNDARY + 1],
                         ids=["before-boundary", "at-boundary", "after-boundary"])
def test_resume_across_a_stage_boundary_is_exact(straight, tiny_recipe, tmp_path, stop_at):
    expected = straight

    stopped = staged(tiny_recipe)
    stopped["training"]["output_dir"] = str(tmp_path / "stopped")
    with pytest.raises(Stop):
        run_pretraining(stopped, extra_callbacks=[StopAtStep(stop_at)])
    resumed = run_pretraining(stopped, resume=True)

    assert resumed.global_step == 6 and resumed.tokens_seen == expected.tokens_seen
    assert losses(resumed) == losses(expected)  # every step, bit for bit
    want = load_file(str(expected.final_checkpoint / "model.safetensors"))
    got = load_file(str(resumed.final_checkpoint / "model.safetensors"))
    assert want.keys() == got.keys() and all(torch.equal(got[name], want[name]) for name in want)


@pytest.mark.parametrize("change,message", [
    ({"stages": []}, "stages: a list of at least one stage"),
    ({"stages[0].steps": 0}, r"stages\[0\].steps: a whole number of optimizer steps >= 1"),
    ({"training.max_steps": 7}, "training.max_steps=7 but the stages' steps sum to 6"),
    ({"stages[1].training.parallelism": "fsdp2"}, r"stages\[1\].training.parallelism: the same for every stage"),
    ({"stages[1].model": {}}, r"stages\[1\]: unknown keys \['model'\]"),
    ({"stages[1].data.seq_len": 100}, r"stages\[1\].data.tokens_per_step=512 is not a multiple of the row length 100"),
    ({"stages[1].data.mixture": [{"until": 1.0, "weights": {"web": 1.0}}]},
     r"stages\[1\].data.mixture: mixture phase 0: unknown sources \['web'\]"),
    ({"stages[1].schedule.warmup_steps": 3}, r"stages\[1\].schedule.warmup_steps=3 must be in \[0, "
                                             r"stages\[1\].steps=3\)"),
    ({"stages[1].name": "general"}, r"stages\[1\].name: 'general' must be a non-empty text, unique"),
])
def test_bad_stages_name_the_field_in_one_line(tiny_recipe, change, message):
    recipe = staged(tiny_recipe)
    for dotted, value in change.items():
        if dotted == "stages":
            recipe["stages"] = value
            continue
        if dotted.startswith("stages["):
            index, rest = int(dotted[7]), dotted[10:]
            target = recipe["stages"][index]
        else:
            target, rest = recipe, dotted
        *parents, key = rest.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[key] = value
    with pytest.raises(RecipeError, match=message) as error:
        load_recipe(recipe)
    assert "\n" not in str(error.value)


def test_a_recipe_without_stages_is_one_stage_of_the_whole_run(tiny_recipe):
    recipe = load_recipe(tiny_recipe)
    (stage,) = recipe.stage_plans
    assert (stage.name, stage.first_step, stage.steps, stage.schedule) == ("main", 0, 6, None)
    assert "stages" not in recipe.to_dict()
    staged_recipe = load_recipe(staged(tiny_recipe))
    assert load_recipe(staged_recipe.to_dict()).stage_plans == staged_recipe.stage_plans  # round trip


def test_processes_of_a_staged_run_read_the_rows_of_one_process(tiny_recipe, corpus_tokenizer):
    """Across a stage boundary that changes the batch and the accumulation, 2 processes together read exactly the
    rows of 1 process, in the same order."""
    recipe = load_recipe(staged(tiny_recipe))
    one = iter(build_stream(recipe, corpus_tokenizer))
    ranks = [iter(build_stream(recipe, corpus_tokenizer, world_size=2, rank=rank)) for rank in (0, 1)]
    for step in range(6):
        accumulation = 2 if step < BOUNDARY else 1
        whole = torch.cat([next(one)["input_ids"] for _ in range(accumulation)])
        parts = [[next(stream)["input_ids"] for _ in range(accumulation)] for stream in ranks]
        # micro-batch m of rank r holds global rows (m x world + r) x per_micro ...
        joined = torch.cat([parts[rank][micro] for micro in range(accumulation) for rank in (0, 1)])
        assert torch.equal(joined, whole), step
