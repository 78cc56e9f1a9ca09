"""The loaders reproduce llama.cpp's 47 reference tokenizations of the real GPT-2, Llama-2 and DeepSeek-LLM
vocabularies exactly, and published folders load with their own BOS/EOS behaviour."""

import json
from pathlib import Path

import pytest

from hf_smallllm.tokenization import load_gguf_tokenizer, load_tokenizer, special_token_behaviour

REFERENCE = Path(__file__).parents[1] / "fixtures" / "tokenizers"


def reference_cases(name: str) -> list[tuple[str, list[int]]]:
    texts = (REFERENCE / f"ggml-vocab-{name}.gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    lines = (REFERENCE / f"ggml-vocab-{name}.gguf.out").read_text(encoding="utf-8").split("\n")
    assert len(lines) >= len(texts) == 47
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, lines, strict=False)]


def mismatches(tokenizer, name):
    return [(text, tokenizer.encode(text, add_special_tokens=False), ids) for text, ids in reference_cases(name)
            if tokenizer.encode(text, add_special_tokens=False) != ids]


@pytest.fixture(scope="module")
def gguf_tokenizers():
    return {name: load_gguf_tokenizer(REFERENCE / f"ggml-vocab-{name}.gguf")
            for name in ("gpt-2", "deepseek-llm", "llama-spm")}


@pytest.mark.parametrize("name, size, bos, eos, adds_bos", [
    ("gpt-2", 50257, 50256, 50256, False),
    ("deepseek-llm", 102400, 100000, 100001, True),
    ("llama-spm", 32000, 1, 2, True),
], ids=["gpt2", "deepseek-llm", "llama2-spm"])
def test_gguf_vocabulary_reproduces_all_reference_tokenizations(gguf_tokenizers, name, size, bos, eos, adds_bos):
    tokenizer = gguf_tokenizers[name]
    assert mismatches(tokenizer, name) == []
    assert (len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id) == (size, bos, eos)
    assert special_token_behaviour(tokenizer) == (adds_bos, False)
    for text, _ in reference_cases(name):
        if name != "llama-spm" or not text.startswith(" "):  # SentencePiece drops the one prepended space only
            assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_gpt2_vocab_and_merges_folder_loads_as_gpt2():
    tokenizer = load_tokenizer(REFERENCE / "gpt2")
    assert len(tokenizer) == 50257 and tokenizer.eos_token_id == 50256
    assert mismatches(tokenizer, "gpt-2") == []


def test_published_chuxin_folder_loads_with_its_config_behaviour(gguf_tokenizers, tmp_path):
    """ChuXin ships DeepSeek's byte-level tokenizer.json under `LlamaTokenizerFast` with `add_bos_token: false`;
    transformers v5 would keep the tokenizer.json post-processor (which adds BOS)."""
    gguf_tokenizers["deepseek-llm"].save_pretrained(tmp_path)
    config_file = tmp_path / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config.update(tokenizer_class="LlamaTokenizerFast", add_bos_token=False, add_eos_token=False)
    config_file.write_text(json.dumps(config), encoding="utf-8")

    tokenizer = load_tokenizer(tmp_path)
    assert special_token_behaviour(tokenizer) == (False, False)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (100000, 100001, 100001)
    assert mismatches(tokenizer, "deepseek-llm") == []


def test_unknown_layouts_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="no GGUF file"):
        load_gguf_tokenizer(tmp_path / "missing.gguf")
