"""Context parallelism (train/context_parallel.py): a sequence split over ranks gives the loss and gradients of the
unsplit row. The split maths (positions, shifted labels, target counts, whole-sequence masks) are checked in one
process; the real engine (DeepSpeed's Ulysses all-to-all on gloo) runs every family's attention on 2 and 4 CPU
ranks against the unsplit run (tests/train/distributed_worker.py `context_parallel`). Stages may use their own sizes:
a 2-rank run that splits only its middle stage trains like one process and resumes exactly across the switch."""

import copy
import json
import shutil

import pytest
import torch

from hf_smallllm import preset_config
from hf_smallllm.data.packing import pack_rows
from hf_smallllm.train.context_parallel import (
    ATTENTION_NAME,
    ContextParallelError,
    StageAttention,
    check_context_parallel,
    context_parallel_refusal,
    count_targets,
    document_causal_mask,
    shard_batch,
)

from .test_distributed import WORKER, torchrun


def _packed_batch(rows=2, length=16, eos=2, seed=0):
    import numpy as np

    ids = np.random.default_rng(seed).integers(3, 50, (rows, length))
    ids[:, 5] = eos
    ids[1, 11] = eos
    batch = {k: torch.from_numpy(v) for k, v in pack_rows(ids, "document", eos).items()}
    batch["cu_seq_lens_q"] = torch.tensor([0, 6, 16])
    return batch


def test_shards_keep_global_positions_and_labels_shifted_over_the_whole_row():
    batch = _packed_batch()
    shards = [shard_batch(batch, rank, 4) for rank in range(4)]
    assert all(s["input_ids"].shape == (2, 4) for s in shards)
    assert torch.equal(torch.cat([s["position_ids"] for s in shards], 1), batch["position_ids"])
    assert torch.equal(torch.cat([s["input_ids"] for s in shards], 1), batch["input_ids"])
    # the target of a slice's last token is the next slice's first token
    assert int(shards[0]["shift_labels"][0, -1]) == int(batch["labels"][0, 4])
    assert all("cu_seq_lens_q" not in s for s in shards)  # whole-row boundaries are recomputed after the gather
    assert sum(count_targets(s) for s in shards) == count_targets(batch)


def test_padded_batches_are_refused_and_full_masks_dropped():
    batch = _packed_batch()
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    assert "attention_mask" not in shard_batch(batch, 0, 2)
    batch["attention_mask"][0, :3] = 0
    with pytest.raises(ContextParallelError, match="padded positions"):
        shard_batch(batch, 0, 2)


def test_a_local_shift_would_lose_the_targets_at_every_cut():
    """What the global shift is for: labels cut first and shifted per slice drop one target per cut."""
    batch = _packed_batch()
    local = [{"labels": batch["labels"][:, r * 4:(r + 1) * 4]} for r in range(4)]
    assert sum(count_targets(s) for s in local) < count_targets(batch)


def test_whole_sequence_mask_is_causal_within_documents():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0]])
    mask = document_causal_mask(positions)[0, 0]
    assert mask.shape == (6, 6)
    assert bool(mask[2, 0]) and not bool(mask[3, 2]) and bool(mask[4, 3]) and not bool(mask[5, 4])
    assert not bool(mask[0, 1])  # causal


@pytest.mark.parametrize("overrides, size, feature", [
    ({}, 3, "attention heads are not divisible by 3"),
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}}, 2, "rope_type='dynamic'"),
    ({"attn_implementation": "flex_attention"}, 2, "flex_attention"),
], ids=["heads", "dynamic-rope", "flex"])
def test_refusals_name_the_feature_in_one_line(overrides, size, feature):
    config = preset_config("tinyllama", "tiny", **overrides)
    message = context_parallel_refusal(config, size)
    assert feature in message and "\n" not in message
    with pytest.raises(ContextParallelError, match="context parallelism"):
        check_context_parallel(config, size, world_size=6)


def test_dynamic_alibi_is_refused_and_fixed_alibi_runs():
    dynamic = preset_config("btlm", "tiny", alibi_scaling={"type": "linear", "train_seq_len": 32})
    assert "dynamic ALiBi" in context_parallel_refusal(dynamic, 2)
    assert context_parallel_refusal(preset_config("btlm", "tiny", alibi_scaling={"type": "linear", "factor": 2.0}),
                                    2) is None


def test_layout_checks():
    config = preset_config("chuxin", "tiny")
    with pytest.raises(ContextParallelError, match="does not divide the 3 process"):
        check_context_parallel(config, 2, world_size=3)
    with pytest.raises(ContextParallelError, match="row length 30"):
        check_context_parallel(config, 4, world_size=4, seq_lens=[32, 30])
    check_context_parallel(config, 4, world_size=8, seq_lens=[32, 64])


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [2, 4])
def test_split_sequence_matches_unsplit_run_on_gloo(ranks, tmp_path):
    out = tmp_path / "report.json"
    torchrun(WORKER, "context_parallel", str(out), nproc=ranks, timeout=900, retry_abort_after_removing=True)
    report = json.loads(out.read_text())
    assert len(report) == 8
    for case, result in report.items():
        assert result["split_targets"] == result["targets"], case
        assert result["loss_diff"] <= 1e-5, (case, result)
        assert result["grad_diff"] <= 1e-5, (case, result)
        assert result["eval_logits_diff"] <= 1e-5, (case, result)  # whole rows in eval mode, one rank alone


@pytest.mark.slow
def test_pretraining_with_context_parallel_matches_one_process(tiny_recipe, tmp_path):
    """The engine end to end: `training.context_parallel: 2` on 2 gloo ranks (one data-parallel group, each rank
    half of every packed row) trains like one process reading whole rows: same losses and weights."""
    from hf_smallllm.train import run_pretraining

    from .test_distributed import assert_same_run, write_recipe

    single_path, single = write_recipe(tiny_recipe, tmp_path, "single", max_steps=3, save_steps=3)
    run_pretraining(single)
    split_path, split = write_recipe(single, tmp_path, "split", context_parallel=2)
    torchrun("training/pretrain.py", "--recipe", str(split_path), retry_abort_after_removing=tmp_path / "split")
    assert_same_run(tmp_path / "split", tmp_path / "single", 3, loss_tol=1e-5, weight_tol=1e-5)
    plan = json.loads((tmp_path / "split" / "run.json").read_text())["parallel"]
    assert plan["context_parallel"] == [2] and plan["micro_batch_rows"] == [2]
    state = json.loads((tmp_path / "split" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["num_input_tokens_seen"] == 3 * 256  # each token counted once, not once per rank


def _with_stage_sizes(stages: list[dict], sizes: list[int]) -> list[dict]:
    """`stages` with each stage's `training.context_parallel` set to the size given for it."""
    stages = copy.deepcopy(stages)
    for stage, size in zip(stages, sizes, strict=True):
        stage.setdefault("training", {})["context_parallel"] = size
    return stages


@pytest.mark.slow
def test_tiny_long_chuxin_stages_on_two_ranks_match_one_process(tokenizer_dir, tmp_path):
    """The shipped tiny-long-chuxin recipe (three stages; whole rows, then the longest split over 2 ranks) at small
    lengths, sharded with FSDP2 as long-chuxin is on GPUs: the row length and the context-parallel size change
    mid-run, and the run equals one process reading whole rows."""
    import yaml

    from hf_smallllm.train import run_pretraining
    from hf_smallllm.train.recipe import load_recipe

    from .test_distributed import assert_same_run

    shipped = load_recipe("tiny-long-chuxin")
    assert [stage.training.context_parallel for stage in shipped.stage_plans] == [1, 1, 2]
    # the shipped stages at 64 -> 128 -> 512 tokens (1:2:8), 2 + 2 + 1 steps
    stages = copy.deepcopy(shipped.stages)
    for stage, steps, seq_len in zip(stages, (2, 2, 1), (64, 128, 512), strict=True):
        stage.update(steps=steps, data={**stage.get("data", {}), "seq_len": seq_len})
    overrides = {"tokenizer": str(tokenizer_dir), "training.max_steps": 5, "training.save_steps": 5,
                 "training.logging_steps": 1, "schedule.warmup_steps": 1, "training.progress_bar": False,
                 "training.tensorboard": False, "data.tokens_per_step": 512, "data.seq_len": 64, "stages": stages}
    split = load_recipe(shipped, {**overrides, "training.output_dir": str(tmp_path / "split"),
                                  "training.parallelism": "fsdp2"})
    path = tmp_path / "split.yaml"
    path.write_text(yaml.safe_dump(split.to_dict()))
    torchrun("training/pretrain.py", "--recipe", str(path), retry_abort_after_removing=tmp_path / "split")
    run_pretraining(load_recipe(shipped, {**overrides, "training.output_dir": str(tmp_path / "single"),
                                          "stages": _with_stage_sizes(stages, [1, 1, 1])}))
    assert_same_run(tmp_path / "split", tmp_path / "single", 5, loss_tol=1e-5, weight_tol=1e-5)
    plan = json.loads((tmp_path / "split" / "run.json").read_text())["parallel"]
    assert plan["context_parallel"] == [1, 1, 2] and plan["parallelism"] == "fsdp2"


def stage_sizes_recipe(tiny_recipe, sizes=(1, 2, 1)) -> dict:
    """The tiny recipe in three stages with the given context-parallel sizes: 4 rows of 64 tokens, then 2 rows of
    128 (the split stage), then 4 rows of 64 again; 2 micro-batches per step. The model has one key/value head, so
    Ulysses over 2 ranks replicates it (and rewrites the attention modules' query heads per key/value head, which the
    whole-row stage after it must undo)."""
    recipe = copy.deepcopy(tiny_recipe)
    del recipe["training"]["max_steps"]
    recipe["model"]["config"] = {"num_key_value_heads": 1}
    recipe["training"].update(save_steps=1, logging_steps=1)
    recipe["stages"] = _with_stage_sizes([{"name": "whole", "steps": 2},
                                          {"name": "split", "steps": 2, "data": {"seq_len": 128}},
                                          {"name": "whole-again", "steps": 1}], list(sizes))
    return recipe


@pytest.mark.slow
def test_a_stage_split_over_two_ranks_trains_like_one_process_and_resumes_exactly(tiny_recipe, tmp_path):
    """Stages with context parallelism 1, 2, 1 on 2 gloo ranks: the middle stage's rows are split (one data-parallel
    group), the others are read whole by 2 data-parallel ranks; the attention switches at both boundaries. Losses
    and weights equal one process reading whole rows, and a run resumed on 2 ranks from a checkpoint of the first
    stage continues into the split stage exactly as the uninterrupted run."""
    import yaml

    from hf_smallllm.train import run_pretraining

    from .test_distributed import assert_same_run

    single = stage_sizes_recipe(tiny_recipe, (1, 1, 1))
    single["training"]["output_dir"] = str(tmp_path / "single")
    run_pretraining(single)
    split = stage_sizes_recipe(tiny_recipe)
    split["training"]["output_dir"] = str(tmp_path / "split")
    path = tmp_path / "split.yaml"
    path.write_text(yaml.safe_dump(split))
    torchrun(WORKER, "pretrain", str(path), retry_abort_after_removing=tmp_path / "split")
    # weights within 5e-5: AdamW's first steps divide by the root of tiny second moments, which magnifies the last
    # bits of a gradient summed over 2 processes (measured: 9.8e-6 after step 1, before any split; 1.3e-5 at the end)
    assert_same_run(tmp_path / "split", tmp_path / "single", 5, loss_tol=1e-5, weight_tol=5e-5)
    plan = json.loads((tmp_path / "split" / "run.json").read_text())["parallel"]
    assert plan["context_parallel"] == [1, 2, 1] and plan["micro_batch_rows"] == [1]
    assert "each row over 2 ranks (1 data-parallel group(s))" in plan["stages"][1]
    state = json.loads((tmp_path / "split" / "checkpoint-5" / "trainer_state.json").read_text())
    assert state["num_input_tokens_seen"] == 5 * 256  # each token counted once, split or not

    # checkpoint 1 (inside the first stage) alone, resumed on 2 ranks: steps 2-5 cross into the split stage and out
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(tmp_path / "split" / "checkpoint-1", resumed / "checkpoint-1")
    shutil.copy(tmp_path / "split" / "metrics.jsonl", resumed / "metrics.jsonl")
    path = tmp_path / "resumed.yaml"
    path.write_text(yaml.safe_dump({**split, "training": {**split["training"], "output_dir": str(resumed)}}))
    # a relaunch after an abort resumes again, from the newest complete checkpoint: the same run
    torchrun(WORKER, "pretrain", str(path), "--resume", retry_abort_after_removing=True)
    assert_same_run(resumed, tmp_path / "split", 5)


def test_stage_sizes_are_checked_in_one_line(tiny_recipe):
    from hf_smallllm.train import run_pretraining
    from hf_smallllm.train.recipe import RecipeError, load_recipe

    recipe = stage_sizes_recipe(tiny_recipe, (1, 3, 1))
    with pytest.raises(RecipeError, match=r"^stages\[1\].training.context_parallel=3 does not divide the row length "
                                          r"128$"):
        load_recipe(recipe)
    with pytest.raises(RecipeError, match=r"stages\[2\].training.context_parallel=0 must be at least 1"):
        load_recipe(stage_sizes_recipe(tiny_recipe, (1, 2, 0)))
    with pytest.raises(RecipeError, match=r"^stage 'split': training.context_parallel=2 does not divide the 1 "
                                          r"process\(es\); launch a multiple of 2$"):
        run_pretraining(stage_sizes_recipe(tiny_recipe))


def test_stage_attention_switches_to_the_model_s_own_attention_and_head_groups(monkeypatch):
    """`StageAttention.use`: a size routes the attention through its Ulysses function, 1 routes it back to the
    model's own implementation with the query heads per key/value head that Ulysses may have rewritten restored; a
    size the run did not prepare is refused."""
    from hf_smallllm import FAMILIES
    from hf_smallllm.models.attention_smallllm import ATTENTION_FUNCTIONS

    model = FAMILIES["tinyllama"].causal_lm_class(preset_config("tinyllama", "tiny", attn_implementation="eager"))
    attention = StageAttention(model, [(1, [64])])  # whole rows only: no process group needed
    attention.use(1)
    assert model.config._attn_implementation == "eager"
    with pytest.raises(ContextParallelError, match=r"context parallelism 2 was not prepared for this run \(sizes "
                                                   r"\[1\]\)"):
        attention.use(2)
    ulysses = object()  # stands for the size's UlyssesAttention (a real one needs 2 ranks: the torchrun tests)
    monkeypatch.setitem(attention._ulysses, 2, ulysses)
    monkeypatch.setitem(ATTENTION_FUNCTIONS._local_mapping, ATTENTION_NAME, None)  # undone after the test
    attention.use(2)
    assert model.config._attn_implementation == ATTENTION_NAME and ATTENTION_FUNCTIONS[ATTENTION_NAME] is ulysses
    layers = [layer.self_attn for layer in model.model.layers]
    for layer in layers:
        layer.num_key_value_groups = 1  # as Ulysses leaves it after replicating key/value heads
    attention.use(1)
    assert model.config._attn_implementation == "eager" and attention.size == 1
    assert {layer.num_key_value_groups for layer in layers} == {4 // 2}  # 4 heads, 2 key/value heads


@pytest.mark.slow
def test_context_parallel_under_deepspeed_zero(tiny_recipe, tmp_path):
    """ZeRO-1 (DeepSpeed's engine, launched by accelerate) with rows split over its 2 ranks trains like one process."""
    pytest.importorskip("deepspeed")
    from hf_smallllm.train import run_pretraining

    from .test_deepspeed import accelerate_deepspeed
    from .test_distributed import assert_same_run, write_recipe

    _, single = write_recipe(tiny_recipe, tmp_path, "single", max_steps=3, save_steps=3)
    run_pretraining(single)
    split_path, _ = write_recipe(single, tmp_path, "zero", context_parallel=2)
    accelerate_deepspeed(1, 2, "training/pretrain.py", "--recipe", str(split_path))
    assert_same_run(tmp_path / "zero", tmp_path / "single", 3, loss_tol=1e-5, weight_tol=1e-5)
    plan = json.loads((tmp_path / "zero" / "run.json").read_text())["parallel"]
    assert plan["parallelism"] == "zero1" and plan["context_parallel"] == [2]


def test_recipe_and_launch_refusals_are_one_line(tiny_recipe, tmp_path):
    from hf_smallllm.train import run_pretraining
    from hf_smallllm.train.recipe import RecipeError, load_recipe

    with pytest.raises(RecipeError, match=r"training.context_parallel=3 does not divide the row length 64"):
        load_recipe({**tiny_recipe, "training": {**tiny_recipe["training"], "context_parallel": 3}})
    with pytest.raises(RecipeError, match=r"training.context_parallel=2 does not divide the 1 process\(es\)"):
        run_pretraining({**tiny_recipe, "training": {**tiny_recipe["training"], "context_parallel": 2}})
