"""Shipped SFT and DPO recipes load and validate, and are reachable as training/recipes/{sft,dpo}_*.yaml."""

from pathlib import Path

import pytest

from hf_smallllm.sft.recipe import load_dpo_recipe, load_sft_recipe
from hf_smallllm.train.recipe import RECIPES_DIR as SFT_RECIPES_DIR

SHIPPED = sorted(p.stem for p in SFT_RECIPES_DIR.glob("sft_*.yaml"))
SHIPPED_DPO = sorted(p.stem for p in SFT_RECIPES_DIR.glob("dpo_*.yaml"))
TRAINING_RECIPES = Path(__file__).parents[2] / "training" / "recipes"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipe_loads(name):
    recipe = load_sft_recipe(name, {"model.init_from": "runs/base"})
    assert recipe.data.sources and recipe.training.max_steps > 0
    assert (TRAINING_RECIPES / f"{name}.yaml").read_text(encoding="utf-8") == \
        (SFT_RECIPES_DIR / f"{name}.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", SHIPPED_DPO)
def test_shipped_dpo_recipe_loads(name):
    recipe = load_dpo_recipe(name, {"model.init_from": "runs/sft/merged"})
    assert recipe.data.sources and recipe.dpo.beta > 0 and recipe.dpo.ref_model is None
    assert (TRAINING_RECIPES / f"{name}.yaml").is_file()


def test_shipped_recipes():
    assert SHIPPED == ["sft_full", "sft_geb", "sft_lora", "sft_qlora"]
    assert SHIPPED_DPO == ["dpo_geb", "dpo_lora"]
    # GEB's two-stage alignment: stage 2 starts from stage 1's merged model
    sft = load_sft_recipe("sft_geb", {"model.init_from": "runs/tiny-geb/checkpoint-240"})
    assert load_dpo_recipe("dpo_geb").model.init_from == f"{sft.training.output_dir}/merged"


def test_dpo_recipe_validation():
    base = {"model": {"init_from": "runs/sft/merged"}, "data": {"sources": [{"name": "p", "path": "x.jsonl"}]}}
    with pytest.raises(ValueError, match="dpo.beta"):
        load_dpo_recipe({**base, "dpo": {"beta": 0}})
    with pytest.raises(ValueError, match="dpo.loss_type"):
        load_dpo_recipe({**base, "dpo": {"loss_type": "kto"}})
    with pytest.raises(ValueError, match="dpo.ref_model: no folder"):
        load_dpo_recipe({**base, "dpo": {"ref_model": "/nonexistent/ref"}})
    with pytest.raises(ValueError, match="not packed"):
        load_dpo_recipe({**base, "data": {**base["data"], "packing": True}})
    with pytest.raises(ValueError, match="unknown SFT recipe sections"):
        load_sft_recipe({**base, "dpo": {}})


def test_overrides_and_unknown_sections():
    recipe = load_sft_recipe("sft_lora", ["model.init_from=x", "lora.r=4", "training.max_steps=3"])
    assert recipe.lora.r == 4 and recipe.training.max_steps == 3
    assert recipe.optimizer.lr == 2e-3  # the recipe's value, not the dataclass default
    with pytest.raises(ValueError, match="unknown SFT recipe sections"):
        load_sft_recipe({"data": {"sources": [{"name": "a", "path": "b"}]}, "pretrain": {}})
