"""Fixtures for the SFT tests: the session's corpus tokenizer saved to a folder, and tiny model checkpoints."""

import copy

import pytest

from hf_smallllm.families import FAMILIES, preset_config

BUNDLED = "bundled:instructions.jsonl"


@pytest.fixture
def tokenizer(corpus_tokenizer):
    return copy.deepcopy(corpus_tokenizer)


def tiny_config(family: str, tokenizer, **overrides):
    values = {"vocab_size": len(tokenizer) + 8, "bos_token_id": tokenizer.bos_token_id,
              "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id, **overrides}
    return preset_config(family, "tiny", **values)


def tiny_model(family: str, tokenizer, **overrides):
    return FAMILIES[family].causal_lm_class(tiny_config(family, tokenizer, **overrides))


@pytest.fixture(scope="session")
def tiny_checkpoint(corpus_tokenizer, tmp_path_factory):
    """A saved tiny model + tokenizer folder per family (layer sizes multiples of 64, as bitsandbytes' CPU 4-bit
    kernels need)."""
    made = {}

    def make(family: str) -> str:
        if family not in made:
            folder = tmp_path_factory.mktemp(f"base-{family}")
            model = tiny_model(family, corpus_tokenizer, intermediate_size=128, initializer_range=0.1)
            model.save_pretrained(folder)
            corpus_tokenizer.save_pretrained(folder)
            made[family] = str(folder)
        return made[family]

    return make


def sft_recipe(output_dir, **sections) -> dict:
    """A small SFT recipe mapping for tests."""
    recipe = {
        "data": {"sources": [{"name": "bundled", "path": BUNDLED}], "max_length": 128},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "optimizer": {"lr": 5e-3, "weight_decay": 0.0},
        "schedule": {"type": "constant"},
        "training": {"output_dir": str(output_dir), "max_steps": 10, "per_device_batch_size": 8,
                     "logging_steps": 1, "save_steps": 5, "progress_bar": False},
    }
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(recipe.get(name), dict):
            recipe[name] = {**recipe[name], **values}
        else:
            recipe[name] = values
    return recipe
