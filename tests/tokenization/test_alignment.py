"""A model config takes its BOS/EOS/PAD ids from the tokenizer, warning where config.json disagrees (ChuXin)."""

import pytest
from transformers import GenerationConfig

from hf_smallllm.families import preset_config
from hf_smallllm.tokenization import align_config_with_tokenizer


def test_chuxin_config_ids_come_from_its_tokenizer(trained_tokenizers):
    tokenizer = trained_tokenizers["chuxin"]
    config = preset_config("chuxin", "tiny", vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2)
    generation = GenerationConfig(bos_token_id=1, eos_token_id=2)
    with pytest.warns(UserWarning) as record:
        changes = align_config_with_tokenizer(config, tokenizer, generation)
    messages = [str(w.message) for w in record]
    assert any(m.startswith("config.bos_token_id is 1 but the tokenizer's bos token") and m.endswith("has id 2048; "
               "using the tokenizer's id") for m in messages), messages
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (2048, 2049, 2049)
    assert (generation.bos_token_id, generation.eos_token_id, generation.pad_token_id) == (2048, 2049, 2049)
    assert changes["bos_token_id"] == (1, 2048) and changes["generation_config.eos_token_id"] == (2, 2049)


def test_agreeing_config_is_left_alone_and_missing_ids_are_kept(trained_tokenizers, recwarn):
    tokenizer = trained_tokenizers["btlm"]  # GPT-2 style: no pad token
    config = preset_config("btlm", "tiny", vocab_size=len(tokenizer), bos_token_id=2048, eos_token_id=2048,
                           pad_token_id=7)
    assert align_config_with_tokenizer(config, tokenizer) == {}
    assert config.pad_token_id == 7 and not recwarn.list


def test_too_few_embedding_rows_is_an_error(trained_tokenizers):
    config = preset_config("tinyllama", "tiny")  # 256 rows
    with pytest.raises(ValueError, match="2,048 tokens but config.vocab_size is 256"):
        align_config_with_tokenizer(config, trained_tokenizers["tinyllama"])
