"""Parity with llama.cpp itself (through llama-cpp-python) for every family's GGUF export, on tiny models with real
tokenizers: f32 logits within 1e-3 of the package model, the same argmax at every position that is not a tie within
float noise (random tiny models have near-equal top logits), identical greedy continuations, and identical
tokenization of a bilingual text. Skipped where llama-cpp-python is not installed."""

import pytest
import torch

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from hf_smallllm.convert.gguf import package_to_gguf  # noqa: E402
from hf_smallllm.convert.gguf_vocab import PROBE_TEXT  # noqa: E402
from hf_smallllm.inference.llama_cpp import (  # noqa: E402
    llama_cpp_greedy,
    llama_cpp_logits,
    llama_cpp_tokenize,
    load_llama_cpp,
)

from .gguf_models import FAMILIES, tiny_family_checkpoint  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.llama_cpp]


@pytest.fixture(scope="module")
def family_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf-llama-cpp")
    files = {}
    for family in FAMILIES:
        folder = tiny_family_checkpoint(family, root / family)
        package_to_gguf(folder, root / f"{family}.gguf", progress=False)
        files[family] = (folder, root / f"{family}.gguf")
    return files


def _ours(folder):
    from transformers import AutoModelForCausalLM

    from hf_smallllm.tokenization.official import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    return model, load_tokenizer(folder)


@pytest.mark.parametrize("family", FAMILIES)
def test_llama_cpp_matches_the_model(family_files, family):
    folder, path = family_files[family]
    model, tokenizer = _ours(folder)
    llm = load_llama_cpp(path, n_ctx=256, logits_all=True)

    ids = tokenizer(PROBE_TEXT)["input_ids"][:96]
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0]
    actual = llama_cpp_logits(llm, ids)
    assert actual.shape == expected.shape
    diff = (actual - expected).abs().max().item()
    assert diff < 1e-3
    top2 = expected.topk(2, dim=-1).values
    decided = (top2[:, 0] - top2[:, 1]) > 2 * diff  # a margin the measured difference cannot flip
    assert decided.sum() >= len(ids) - 2
    assert torch.equal(actual.argmax(-1)[decided], expected.argmax(-1)[decided])

    prompt = ids[:12]
    with torch.no_grad():
        ours = model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False, min_new_tokens=24,
                              pad_token_id=tokenizer.eos_token_id)[0, len(prompt):].tolist()
    assert llama_cpp_greedy(llm, prompt, 24) == ours
    llm.close()


@pytest.mark.parametrize("family", FAMILIES)
def test_llama_cpp_tokenizes_like_the_tokenizer(family_files, family):
    folder, path = family_files[family]
    _, tokenizer = _ours(folder)
    llm = load_llama_cpp(path, n_ctx=64)
    assert llama_cpp_tokenize(llm, PROBE_TEXT) == tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    assert llama_cpp_tokenize(llm, PROBE_TEXT, add_special=True) == tokenizer(PROBE_TEXT)["input_ids"]
    for line in PROBE_TEXT.splitlines():
        assert llama_cpp_tokenize(llm, line) == tokenizer(line, add_special_tokens=False)["input_ids"], line
    llm.close()
