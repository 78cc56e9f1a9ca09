"""Training from prepared token shards: the engine reads them through the same stream and train exactly what
the on-the-fly stream trains; a run resumed from shards continues on the same rows; a wrong tokenizer stops the
run before anything trains."""

import copy

import pytest

from hf_smallllm.data.prepare import prepare_sources
from hf_smallllm.train import read_metrics, run_pretraining
from hf_smallllm.train.recipe import RecipeError


def losses(result):
    return {r["step"]: r["loss"] for r in read_metrics(result.metrics_path) if "loss" in r}


@pytest.fixture
def prepared_recipe(tiny_recipe, corpus_tokenizer, tmp_path):
    folder = tmp_path / "tokens"
    prepare_sources(tiny_recipe["data"]["sources"], corpus_tokenizer, folder, workers=0, progress=False)
    recipe = copy.deepcopy(tiny_recipe)
    recipe["data"]["prepared"] = str(folder)
    return recipe


def test_training_on_shards_is_exactly_training_on_the_fly(tiny_recipe, prepared_recipe, tmp_path):
    on_the_fly = copy.deepcopy(tiny_recipe)
    on_the_fly["training"].update(output_dir=str(tmp_path / "fly"), max_steps=3, save_steps=3)
    from_shards = copy.deepcopy(prepared_recipe)
    from_shards["training"].update(output_dir=str(tmp_path / "shards"), max_steps=3, save_steps=3)
    expected = losses(run_pretraining(on_the_fly))
    assert losses(run_pretraining(from_shards)) == expected  # the same rows: the same float losses


def test_a_mismatched_tokenizer_stops_before_training(prepared_recipe, tmp_path, corpus_tokenizer):
    other = corpus_tokenizer.__class__(tokenizer_object=corpus_tokenizer.backend_tokenizer, eos_token="</s>")
    other.add_tokens(["<extra>"])
    other.save_pretrained(tmp_path / "other")
    recipe = copy.deepcopy(prepared_recipe)
    recipe["tokenizer"] = str(tmp_path / "other")
    with pytest.raises(RecipeError, match="another tokenizer"):
        run_pretraining(recipe)
    assert not (tmp_path / "run" / "checkpoint-3").exists()
