"""Shared test setup: no test may reach a hub, and every test starts from the same random state."""

import os
from pathlib import Path

# Before transformers / huggingface_hub are imported anywhere: nothing in the suite downloads. Tests that talk to
# the local Hub-protocol server set their own endpoint in a subprocess or override these explicitly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = Path(__file__).parents[1] / "hf_smallllm" / "resources" / "corpus"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def corpus_tokenizer():
    """A small real byte-level BPE tokenizer (~1,000 entries) trained on the bundled English, Chinese and code text;
    `<unk>` 0, `<s>` 1, `</s>` 2 (also the pad token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [
        (CORPUS / "en_shakespeare.txt").read_text(encoding="utf-8")[:150_000],
        (CORPUS / "en_kjv.txt").read_text(encoding="utf-8")[:60_000],
        (CORPUS / "zh_poetry.jsonl").read_text(encoding="utf-8")[:60_000],
        (CORPUS / "code_python.jsonl").read_text(encoding="utf-8")[:60_000],
    ]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")
