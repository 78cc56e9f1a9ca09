"""Context parallelism (train/context_parallel.py): a sequence split over ranks gives the loss and gradients of the
unsplit row. The split maths (positions, shifted labels, target counts, whole-sequence masks) are checked in one
process; the real engine (DeepSpeed's Ulysses all-to-all on gloo) runs every family's attention on 2 and 4 CPU
ranks against the unsplit run (tests/train/distributed_worker.py `context_parallel`)."""

import json

import pytest
import torch

from hf_smallllm import preset_config
from hf_smallllm.data.packing import pack_rows
from hf_smallllm.train.context_parallel import (
    ContextParallelError,
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
    assert plan["context_parallel"] == 2 and plan["micro_batch_rows"] == [2]
    state = json.loads((tmp_path / "split" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["num_input_tokens_seen"] == 3 * 256  # each token counted once, not once per rank


@pytest.mark.slow
def test_tiny_long_chuxin_stages_on_two_ranks_match_one_process(tokenizer_dir, tmp_path):
    """The shipped tiny-long-chuxin recipe (three stages, rows split over 2 ranks) at small lengths, sharded with
    FSDP2 as long-chuxin is on GPUs: the sequence length changes mid-run, each stage's rows are split, and the run
    equals one process reading whole rows."""
    import yaml

    from hf_smallllm.train import run_pretraining
    from hf_smallllm.train.recipe import load_recipe

    from .test_distributed import assert_same_run

    overrides = {"tokenizer": str(tokenizer_dir), "training.max_steps": 5, "training.save_steps": 5,
                 "training.logging_steps": 1, "schedule.warmup_steps": 1, "training.progress_bar": False,
                 "training.tensorboard": False, "data.tokens_per_step": 512,
                 "data.sequence_length": [{"until": 0.4, "seq_len": 64}, {"until": 0.8, "seq_len": 128},
                                          {"until": 1.0, "seq_len": 512}]}
    shipped = load_recipe("tiny-long-chuxin")
    assert shipped.training.context_parallel == 2 and len(shipped.data.sequence_length) == 3
    split = load_recipe(shipped, {**overrides, "training.output_dir": str(tmp_path / "split"),
                                  "training.parallelism": "fsdp2"})
    path = tmp_path / "split.yaml"
    path.write_text(yaml.safe_dump(split.to_dict()))
    torchrun("training/pretrain.py", "--recipe", str(path), retry_abort_after_removing=tmp_path / "split")
    run_pretraining(load_recipe(shipped, {**overrides, "training.output_dir": str(tmp_path / "single"),
                                          "training.context_parallel": 1}))
    assert_same_run(tmp_path / "split", tmp_path / "single", 5, loss_tol=1e-5, weight_tol=1e-5)
    plan = json.loads((tmp_path / "split" / "run.json").read_text())["parallel"]
    assert plan["seq_lens"] == [64, 128, 512] and plan["context_parallel"] == 2 and plan["parallelism"] == "fsdp2"


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
    assert plan["parallelism"] == "zero1" and plan["context_parallel"] == 2


def test_recipe_and_launch_refusals_are_one_line(tiny_recipe, tmp_path):
    from hf_smallllm.train import run_pretraining
    from hf_smallllm.train.recipe import RecipeError, load_recipe

    with pytest.raises(RecipeError, match=r"training.context_parallel=3 does not divide the row length 64"):
        load_recipe({**tiny_recipe, "training": {**tiny_recipe["training"], "context_parallel": 3}})
    with pytest.raises(RecipeError, match=r"training.context_parallel=2 does not divide the 1 process\(es\)"):
        run_pretraining({**tiny_recipe, "training": {**tiny_recipe["training"], "context_parallel": 2}})
