"""Issue 31: one `pretrain` at a time per run folder, and recipe source names that cannot lead outside the prepared
folder."""

import copy

import pytest

from hf_smallllm.runfiles import FolderLock
from hf_smallllm.train import run_pretraining
from hf_smallllm.train.recipe import RecipeError, load_recipe

from .test_resume import Crash, CrashAtStep


def test_a_recipe_source_name_leading_outside_is_refused_at_load(tiny_recipe):
    recipe = copy.deepcopy(tiny_recipe)
    recipe["data"]["sources"][0]["name"] = "../x"
    with pytest.raises(RecipeError, match=r"data.sources\[0\].name: source name '../x'"):
        load_recipe(recipe)


def test_a_second_run_in_the_same_folder_is_refused_while_the_first_trains(tiny_recipe, tmp_path):
    """Before: two `pretrain --resume` on one folder both proceeded and metrics.jsonl got duplicate steps."""
    recipe = copy.deepcopy(tiny_recipe)
    with pytest.raises(Crash):
        run_pretraining(recipe, extra_callbacks=[CrashAtStep(4)])
    with FolderLock(recipe["training"]["output_dir"], "training"):  # another `pretrain` holds the folder
        with pytest.raises(RecipeError, match=r"in use by training \(pid \d+ on .*another `pretrain` runs"):
            run_pretraining(recipe, resume=True)
    assert run_pretraining(recipe, resume=True).global_step == 6
