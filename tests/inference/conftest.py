"""A tiny model folder with a real (small) byte-level BPE tokenizer trained on the bundled corpus."""

from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from hf_smallllm import FAMILIES, preset_config

CORPUS = Path(__file__).parents[2] / "hf_smallllm" / "resources" / "corpus"


@pytest.fixture(scope="session")
def tiny_tokenizer():
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    text = (CORPUS / "en_shakespeare.txt").read_text(encoding="utf-8")[:200_000]
    trainer = trainers.BpeTrainer(vocab_size=256 + 64, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator([text], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_tokenizer):
    """A saved tiny TinyLlama-shaped model (random weights) plus tokenizer; vocab sized to the tokenizer."""
    path = tmp_path_factory.mktemp("tiny-tinyllama")
    config = preset_config("tinyllama", "tiny", vocab_size=len(tiny_tokenizer), bos_token_id=1, eos_token_id=2)
    model = FAMILIES["tinyllama"].causal_lm_class(config)
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path
