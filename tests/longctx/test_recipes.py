"""The long-context recipes load and validate; the tiny ChuXin-style one trains with its raised RoPE base, its
growing row lengths and chunked cross-entropy through the pretraining library."""

from pathlib import Path

import pytest

from hf_smallllm.runfiles import read_metrics
from hf_smallllm.train.recipe import load_recipe

RECIPES = Path(__file__).parents[2] / "training" / "recipes"
LONG = ["long-chuxin", "long-btlm", "tiny-long-chuxin", "tiny-long-btlm"]


@pytest.mark.parametrize("name", LONG)
def test_long_recipes_validate(name):
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    config = recipe.model.config
    assert config["loss_chunk_size"] > 0 and recipe.model.gradient_checkpointing
    lengths = [phase["seq_len"] for stage in recipe.stage_plans for phase in stage.seq_len_phases]
    assert max(lengths) == config["max_position_embeddings"]
    if recipe.model.family == "chuxin":
        assert config["rope_theta"] > 10_000.0  # the raised base
        assert len(recipe.stage_plans) == 3 and lengths == sorted(lengths)  # 32K -> 128K -> 1M and the tiny mirror
        # only the longest rows are split (the memory plan's choice); the others train whole
        sizes = [stage.training.context_parallel for stage in recipe.stage_plans]
        assert sizes[:2] == [1, 1] and sizes[2] > 1
        assert any(source.get("min_chars", 1) > 10_000 for source in recipe.data.sources)  # long-doc upsampling
    else:
        assert config["alibi_scaling"]["type"] == "linear"


@pytest.mark.slow
def test_tiny_long_chuxin_trains(tokenizer_dir, tmp_path):
    from transformers import AutoConfig

    from hf_smallllm.train.api import run_pretraining

    recipe = load_recipe(RECIPES / "tiny-long-chuxin.yaml", {
        "tokenizer": str(tokenizer_dir), "training.output_dir": str(tmp_path / "run"), "training.max_steps": 2,
        "training.save_steps": 2, "schedule.warmup_steps": 0, "training.progress_bar": False,
        "training.tensorboard": False, "data.tokens_per_step": 512, "training.logging_steps": 1,
        # whole rows on one process here; tests/train/test_context_parallel.py splits the last stage over 2
        "stages": [{"name": "short", "steps": 1, "data": {"seq_len": 128}},
                   {"name": "long", "steps": 1, "data": {"seq_len": 256}}],
    })
    result = run_pretraining(recipe)
    assert result.global_step == 2 and result.tokens_seen == 1024
    config = AutoConfig.from_pretrained(result.final_checkpoint)
    assert config.rope_parameters["rope_theta"] == 560_000.0 and config.loss_chunk_size == 1024
    losses = [r["loss"] for r in read_metrics(result.metrics_path) if "loss" in r]
    assert losses and all(loss == loss and 0 < loss < 20 for loss in losses)
