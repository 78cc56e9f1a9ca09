"""Chunked cross-entropy (`loss_chunk_size`) gives the loss and gradients of the plain path, never returns logits."""

import pytest
import torch

from hf_smallllm import FAMILIES, preset_config
from hf_smallllm.models.loss_smallllm import chunked_causal_lm_loss
from tests.models.helpers import random_ids, tiny_model


def loss_and_grads(model, ids, labels, **kwargs):
    model.zero_grad()
    output = model(input_ids=ids, labels=labels, **kwargs)
    output.loss.backward()
    return output, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", ["tinyllama", "btlm"])  # btlm: muP output multiplier and tied head
def test_chunked_loss_and_gradients_match_plain(family):
    plain = tiny_model(family, "sdpa").train()
    chunked = tiny_model(family, "sdpa", loss_chunk_size=7).train()  # 7 does not divide the 2 x 40 tokens
    assert chunked.config.loss_chunk_size == 7
    ids = random_ids(plain.config.vocab_size, (2, 40))
    labels = ids.clone()
    labels[0, :5] = -100  # ignored tokens, as at packed document starts
    labels[1, 20] = -100
    for kwargs in ({}, {"num_items_in_batch": torch.tensor(100)}):
        reference, reference_grads = loss_and_grads(plain, ids, labels, **kwargs)
        output, grads = loss_and_grads(chunked, ids, labels, **kwargs)
        assert output.logits is None
        torch.testing.assert_close(output.loss, reference.loss, atol=1e-6, rtol=1e-5)
        assert grads.keys() == reference_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, reference_grads[name], atol=1e-6, rtol=1e-4, msg=name)


def test_chunked_loss_function_with_shift_labels_and_no_grad():
    torch.manual_seed(0)
    hidden = torch.randn(2, 9, 16)
    head = torch.nn.Linear(16, 50, bias=False)
    labels = torch.randint(0, 50, (2, 9))
    shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]
    expected = torch.nn.functional.cross_entropy(head(hidden).flatten(0, 1), shifted.flatten(), ignore_index=-100)
    with torch.no_grad():
        got = chunked_causal_lm_loss(hidden, head, labels=None, chunk_size=4, shift_labels=shifted)
    torch.testing.assert_close(got, expected)
    assert torch.isnan(chunked_causal_lm_loss(hidden, head, torch.full((2, 9), -100), chunk_size=4))
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_causal_lm_loss(hidden, head, labels, chunk_size=0)


def test_without_labels_the_logits_come_back():
    model = tiny_model("chuxin", "sdpa", loss_chunk_size=16)
    ids = random_ids(model.config.vocab_size, (1, 12))
    assert model(ids).logits.shape == (1, 12, model.config.vocab_size)


@pytest.mark.parametrize("value", [0, -4, 2.5, True, "64"])
def test_loss_chunk_size_is_validated(value):
    with pytest.raises(ValueError, match="loss_chunk_size"):
        preset_config("tinyllama", "tiny", loss_chunk_size=value)


def test_loss_chunk_size_survives_save_and_load(tmp_path):
    model = FAMILIES["skywork"].causal_lm_class(preset_config("skywork", "tiny", loss_chunk_size=1024))
    model.save_pretrained(tmp_path)
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path).config.loss_chunk_size == 1024
