"""Shared fixtures: tokenizers of every family's kind, trained once per session on the bundled bilingual corpus."""

import pytest

from hf_smallllm.resources import CORPUS

TRAIN_FILES = [str(p) for p in sorted(CORPUS.glob("*")) if p.is_file() and p.name != "README.md"]
TEST_VOCAB = 2048
FAMILY_NAMES = ["chuxin", "btlm", "tinyllama", "skywork", "geb"]


@pytest.fixture(scope="session")
def trained_tokenizers():
    from hf_smallllm.tokenization import train_tokenizer

    return {family: train_tokenizer(TRAIN_FILES, family=family, vocab_size=TEST_VOCAB, progress=False)
            for family in FAMILY_NAMES}
