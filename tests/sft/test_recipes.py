"""Shipped SFT recipes load and validate, and are reachable as training/recipes/sft_*.yaml."""

from pathlib import Path

import pytest

from hf_smallllm.sft.recipe import SFT_RECIPES_DIR, load_sft_recipe

SHIPPED = sorted(p.stem for p in SFT_RECIPES_DIR.glob("sft_*.yaml"))
TRAINING_RECIPES = Path(__file__).parents[2] / "training" / "recipes"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipe_loads(name):
    recipe = load_sft_recipe(name, {"model.init_from": "runs/base"})
    assert recipe.data.sources and recipe.training.max_steps > 0
    assert (TRAINING_RECIPES / f"{name}.yaml").read_text(encoding="utf-8") == \
        (SFT_RECIPES_DIR / f"{name}.yaml").read_text(encoding="utf-8")


def test_three_recipes_are_shipped():
    assert SHIPPED == ["sft_full", "sft_lora", "sft_qlora"]


def test_overrides_and_unknown_sections():
    recipe = load_sft_recipe("sft_lora", ["model.init_from=x", "lora.r=4", "training.max_steps=3"])
    assert recipe.lora.r == 4 and recipe.training.max_steps == 3
    assert recipe.optimizer.lr == 2e-3  # the recipe's value, not the dataclass default
    with pytest.raises(ValueError, match="unknown SFT recipe sections"):
        load_sft_recipe({"data": {"sources": [{"name": "a", "path": "b"}]}, "pretrain": {}})
