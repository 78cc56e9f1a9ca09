"""Recipes: every shipped recipe is valid (and the tiny ones train), mistakes name the offending field, overrides
apply, and the CLI reports errors in one line."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from hf_smallllm.train import load_recipe, read_metrics, run_pretraining
from hf_smallllm.train.lr_schedules import lr_multiplier
from hf_smallllm.train.recipe import RECIPES_DIR, RecipeError
from hf_smallllm_cli import main

SHIPPED = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml") if p.stem.startswith(("tiny-", "published-")))
FAMILIES = ["tinyllama", "geb", "chuxin", "btlm", "skywork"]


def test_every_family_has_a_tiny_and_a_published_recipe():
    for family in FAMILIES:
        assert f"tiny-{family}" in SHIPPED and f"published-{family}" in SHIPPED
    assert (Path(__file__).parents[2] / "training" / "recipes" / "tiny-btlm.yaml").exists()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipes_validate(name, tokenizer_dir):
    recipe = load_recipe(name, [f"tokenizer={tokenizer_dir}"])
    assert recipe.model.family in FAMILIES and recipe.training.max_steps > 0


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_recipes_train(family, tokenizer_dir, tmp_path):
    result = run_pretraining(f"tiny-{family}", [f"tokenizer={tokenizer_dir}", f"training.output_dir={tmp_path}",
                                                "training.max_steps=4", "training.save_steps=4",
                                                "training.logging_steps=2",
                                                "data.tokens_per_step=1024",
                                                "schedule.warmup_steps=1", "training.tensorboard=false",
                                                "training.progress_bar=false", "training.precision=fp32"])
    assert result.global_step == 4 and result.family == family
    assert (result.final_checkpoint / "model.safetensors").exists()
    records = [r for r in read_metrics(result.metrics_path) if "loss" in r]
    assert records and all(math.isfinite(r["loss"]) for r in records)


@pytest.mark.parametrize("override,message", [
    ("model.family=llama", "model.family: unknown family 'llama'"),
    ("model.preset=huge", "model.preset: tinyllama has no preset 'huge'"),
    ("optimizer.lr=-1", "optimizer.lr=-1.0 must be positive"),
    ("optimizer.lrr=1", "optimizer: unknown keys ['lrr']"),
    ("data.tokens_per_step=1000", "not a multiple of the row length 64"),
    ("schedule.type=exponential", "schedule.type='exponential'"),
    ("training.max_steps=true", "training.max_steps: expected a number"),
    ("training.precision=fp8", "training.precision='fp8'"),
    ("data.packing=ragged", "data.packing='ragged'"),
])
def test_bad_recipes_name_the_field(tiny_recipe, override, message):
    with pytest.raises(RecipeError) as error:
        load_recipe(tiny_recipe, [override])
    assert message in str(error.value)


def test_overrides_reach_list_entries_by_index():
    """`--set stages[2].training.context_parallel=1` runs tiny-long-chuxin on one process; `data.sources[0].weight`
    changes one source; an index the recipe does not have is a one-line error naming it."""
    staged = load_recipe("tiny-long-chuxin", ["stages[2].training.context_parallel=1"])
    assert [stage.training.context_parallel for stage in staged.stage_plans] == [1, 1, 1]
    assert load_recipe("tiny-long-chuxin").stage_plans[2].training.context_parallel == 2  # the file is untouched
    weighted = load_recipe("tiny-tinyllama", ["data.sources[0].weight=0.5"])
    assert weighted.data.sources[0]["weight"] == 0.5 and weighted.data.sources[1] == \
        load_recipe("tiny-tinyllama").data.sources[1]
    with pytest.raises(RecipeError, match=r"stages\[5\] does not exist \(the recipe's stages has 3 entries"):
        load_recipe("tiny-long-chuxin", ["stages[5].steps=3"])
    with pytest.raises(RecipeError, match="override data.sources.x: sources is not a section"):
        load_recipe("tiny-tinyllama", ["data.sources.x=1"])


def test_missing_sources_and_tokenizer(tiny_recipe, tmp_path):
    with pytest.raises(RecipeError, match=r"data.sources\[1\] \(shakespeare\): give 'paths' or 'dataset'"):
        load_recipe(tiny_recipe, {"data.sources": [tiny_recipe["data"]["sources"][0], {"name": "shakespeare"}]})
    with pytest.raises(RecipeError, match="no file matches"):
        run_pretraining(tiny_recipe, {"data.sources": [{"name": "x", "paths": [str(tmp_path / "none*.txt")]}]})
    with pytest.raises(RecipeError, match="needs a tokenizer folder"):
        run_pretraining(tiny_recipe, {"tokenizer": None})
    with pytest.raises(FileNotFoundError, match="not a file and not a shipped recipe"):
        load_recipe("tiny-llama3")


def test_lr_schedules():
    cosine = [lr_multiplier(s, "cosine", 100, warmup_steps=10, min_lr_ratio=0.1) for s in range(100)]
    assert cosine[0] == pytest.approx(0.1) and cosine[9] == 1.0 and cosine[10] == 1.0
    assert cosine[-1] == pytest.approx(0.1) and all(a >= b for a, b in zip(cosine[10:], cosine[11:], strict=False))
    linear = [lr_multiplier(s, "linear", 11, min_lr_ratio=0.0) for s in range(11)]
    assert linear == pytest.approx([1 - s / 10 for s in range(11)])
    skywork = [lr_multiplier(s, "cosine_then_constant", 100, min_lr_ratio=0.1, decay_until=0.6) for s in range(100)]
    assert skywork[59] == pytest.approx(0.1) and skywork[60:] == pytest.approx([0.1] * 40)
    assert skywork[30] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 30 / 59)))
    assert {lr_multiplier(s, "constant", 10, warmup_steps=2) for s in range(2, 10)} == {1.0}


def test_cli_prints_the_resolved_recipe_and_reports_errors_in_one_line(capsys, tokenizer_dir):
    assert main(["pretrain", "--recipe", "tiny-btlm", "--tokenizer", str(tokenizer_dir), "--set",
                 "training.max_steps=7", "--print-recipe"]) == 0
    printed = capsys.readouterr().out
    assert "max_steps: 7" in printed and str(tokenizer_dir) in printed
    assert main(["pretrain", "--recipe", "tiny-btlm", "--set", "optimizer.lr=0", "--print-recipe"]) == 2
    assert capsys.readouterr().err.strip() == "hf-smallllm pretrain: error: optimizer.lr=0.0 must be positive"


def test_training_script_is_a_thin_front():
    done = subprocess.run([sys.executable, "training/pretrain.py", "--help"], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0 and "--resume" in done.stdout and "--recipe" in done.stdout
