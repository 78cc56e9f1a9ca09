"""Numerical parity with transformers' own implementations (float32, identical weights) and with BTLM's golden
logits: the heart of the package's claim that these are the published architectures."""

import pytest
import torch
from safetensors.torch import load_file

from hf_smallllm import BTLMForCausalLM

from .helpers import CPU_ATTENTION, LLAMA_SHAPED, random_ids, reference_model, tiny_model

TOLERANCE = 1e-4  # max |logit difference|; measured values are ~1e-6


@pytest.mark.parametrize("attn", CPU_ATTENTION)
@pytest.mark.parametrize("family", LLAMA_SHAPED + ["geb"])
def test_logits_match_transformers_reference(family, attn):
    model = tiny_model(family, attn)
    reference = reference_model(model)
    ids = random_ids(model.config.vocab_size, (2, 37))
    with torch.no_grad():
        ours, theirs = model(ids).logits, reference(ids).logits
    assert (ours - theirs).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("attn", CPU_ATTENTION)
@pytest.mark.parametrize("family", LLAMA_SHAPED + ["geb"])
def test_greedy_generation_matches_transformers_reference(family, attn):
    model = tiny_model(family, attn)
    reference = reference_model(model)
    prompt = random_ids(model.config.vocab_size, (1, 7))
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        assert torch.equal(model.generate(prompt, **kwargs), reference.generate(prompt, **kwargs))


@pytest.mark.parametrize("attn", CPU_ATTENTION)
def test_btlm_golden_logits(fixtures_dir, attn):
    """The golden checkpoint is in BTLM's official layout (GPT-2 Conv1D, fused QKV, stored slopes, tied head);
    its logits were produced by BTLM's reference implementation."""
    model = BTLMForCausalLM.from_pretrained(fixtures_dir / "btlm-tiny", attn_implementation=attn).eval()
    expected = load_file(fixtures_dir / "btlm-tiny" / "expected_logits.safetensors")
    with torch.no_grad():
        logits = model(expected["input_ids"]).logits
    assert logits.shape == expected["logits"].shape
    assert (logits - expected["logits"]).abs().max().item() < TOLERANCE


def test_btlm_golden_config_is_read_from_official_spelling(fixtures_dir):
    model = BTLMForCausalLM.from_pretrained(fixtures_dir / "btlm-tiny")
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 4)
    assert config.intermediate_size == 170 and config.max_position_embeddings == 256
    assert config.output_logits_multiplier == pytest.approx(0.222)
    assert config.attention_scaling == pytest.approx(1 / 16)
    assert config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert "auto_map" not in config.to_dict()
    # the stored [heads, 1] slopes, loaded as stored
    torch.testing.assert_close(model.model.alibi.slopes.view(-1), torch.tensor([0.25, 0.0625, 0.015625, 0.00390625]))
