"""The parallel plan: what a launcher or recipe asks for is read correctly, and what cannot be honoured stops the run
with one line (or, with allow_fallback, runs and says so). Multi-process behaviour: test_distributed.py."""

import copy

import pytest

from hf_smallllm.train.parallel import requested_parallelism
from hf_smallllm.train.recipe import RecipeError, load_recipe
from hf_smallllm.train.run import build_run


@pytest.mark.parametrize("env, expected", [
    ({}, "auto"),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}, "fsdp2"),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "fsdp1"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, "zero3"),
])
def test_the_accelerate_config_request_is_read_from_its_environment(monkeypatch, env, expected):
    for name in ("ACCELERATE_USE_FSDP", "FSDP_VERSION", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert requested_parallelism("auto")[0] == expected
    assert requested_parallelism("ddp") == ("ddp", "training.parallelism")  # the recipe wins when it says


def test_fsdp_version_one_is_refused_even_with_allow_fallback(tiny_recipe, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    recipe = copy.deepcopy(tiny_recipe)
    recipe["training"]["allow_fallback"] = True
    with pytest.raises(RecipeError, match="FSDP version 1.*fsdp_version: 2"):
        build_run(load_recipe(recipe))


def test_a_one_process_simple_accelerate_launch_asked_for_more_is_refused(tiny_recipe, monkeypatch):
    """What `accelerate launch --cpu --num_processes 2` leaves in the environment of the one process it starts."""
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(RecipeError, match="add --multi_gpu"):
        build_run(load_recipe(copy.deepcopy(tiny_recipe)))


def test_an_unknown_parallelism_names_the_choices(tiny_recipe):
    recipe = copy.deepcopy(tiny_recipe)
    recipe["training"]["parallelism"] = "tp"
    with pytest.raises(RecipeError, match=r"training.parallelism='tp'; choose one of"):
        load_recipe(recipe)
