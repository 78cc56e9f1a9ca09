"""A tiny model folder with the suite's small real tokenizer."""

import pytest

from hf_smallllm import FAMILIES, preset_config


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, corpus_tokenizer):
    """A saved tiny TinyLlama-shaped model (random weights) plus tokenizer; vocab sized to the tokenizer."""
    path = tmp_path_factory.mktemp("tiny-tinyllama")
    config = preset_config("tinyllama", "tiny", vocab_size=len(corpus_tokenizer), bos_token_id=1, eos_token_id=2)
    model = FAMILIES["tinyllama"].causal_lm_class(config)
    model.save_pretrained(path)
    corpus_tokenizer.save_pretrained(path)
    return path
