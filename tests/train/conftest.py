"""A tiny pretraining recipe on the bundled corpus, small enough for a few CPU steps per test."""

import pytest


@pytest.fixture(scope="session")
def tokenizer_dir(corpus_tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    corpus_tokenizer.save_pretrained(folder)
    return folder


def tiny_recipe_for(tokenizer_dir, folder):
    """A recipe mapping: 2-layer TinyLlama, 64-token rows, 4 rows per step in 2 micro-batches, checkpoints every 3."""
    return {
        "model": {"family": "tinyllama", "preset": "tiny"},
        "tokenizer": str(tokenizer_dir),
        "data": {
            "sources": [
                {"name": "kjv", "paths": ["bundled:en_kjv.txt"], "split_by": "line", "weight": 0.5},
                {"name": "shakespeare", "paths": ["bundled:en_shakespeare.txt"], "split_by": "heading",
                 "weight": 0.5},
            ],
            "seq_len": 64,
            "tokens_per_step": 256,
        },
        "optimizer": {"lr": 3e-3},
        "schedule": {"type": "cosine", "warmup_steps": 2},
        "training": {"output_dir": str(folder / "run"), "max_steps": 6, "gradient_accumulation_steps": 2,
                     "save_steps": 3, "logging_steps": 1, "tensorboard": False, "progress_bar": False},
    }


@pytest.fixture
def tiny_recipe(tokenizer_dir, tmp_path):
    return tiny_recipe_for(tokenizer_dir, tmp_path)
