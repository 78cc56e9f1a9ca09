"""Fixtures of the evaluation tests: small real tokenizers and a tiny model trained on the bundled corpus."""

import pytest

from .helpers import corpus_bpe_tokenizer, corpus_documents, train_tiny_lm

TRAIN_STEPS = 300  # ~10 s on one CPU thread; enough for clearly different per-domain losses


@pytest.fixture(scope="session")
def tokenizer():
    """Byte-level BPE with 512 entries trained on the bundled corpus."""
    return corpus_bpe_tokenizer(512)


@pytest.fixture(scope="session")
def trained_model(tokenizer):
    """A tiny TinyLlama-shaped model trained for TRAIN_STEPS steps on the bundled training text only (no benchmark
    data): the clean model of the contamination demonstration and the model of the end-to-end tests."""
    return train_tiny_lm(tokenizer, corpus_documents(), steps=TRAIN_STEPS)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, trained_model, tokenizer):
    """`trained_model` saved with its tokenizer, as a user's checkpoint folder."""
    path = tmp_path_factory.mktemp("trained-tinyllama")
    trained_model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
