"""Long ALiBi rows on sdpa attend block by block from the slopes (no [q, kv] bias): same logits, gradients and cached
generation as the dense-bias path; padded and packed rows keep the dense path."""

import pytest
import torch

from hf_smallllm.models import attention_smallllm
from tests.models.helpers import random_ids, tiny_model

SCALINGS = [None, {"type": "linear", "train_seq_len": 24}]


@pytest.fixture
def small_blocks(monkeypatch):
    """Blockwise above 16 x 16 entries, 3 queries x 4 heads x kv per block at length 48: many uneven blocks."""
    monkeypatch.setattr(attention_smallllm, "ALIBI_DENSE_MAX_ENTRIES", 16 * 16)
    monkeypatch.setattr(attention_smallllm, "ALIBI_BLOCK_ENTRIES", 4 * 3 * 48)


def _forward_backward(model, ids):
    model.zero_grad()
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("alibi_scaling", SCALINGS)
def test_blockwise_matches_dense(alibi_scaling, small_blocks, monkeypatch):
    model = tiny_model("btlm", "sdpa", alibi_scaling=alibi_scaling, num_key_value_heads=2).train()
    ids = random_ids(model.config.vocab_size, (2, 48))
    calls = []
    original = attention_smallllm.alibi_blockwise_attention_forward
    monkeypatch.setattr(attention_smallllm, "_alibi_causal_block",
                        lambda *a: calls.append(a[0].shape[-2]) or _dense_block(*a))
    logits, grads = _forward_backward(model, ids)
    assert calls and max(calls) == 3  # it really went block by block
    monkeypatch.setattr(attention_smallllm, "ALIBI_DENSE_MAX_ENTRIES", 10**12)
    reference_logits, reference_grads = _forward_backward(model, ids)
    torch.testing.assert_close(logits, reference_logits, atol=2e-5, rtol=1e-4)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference_grads[name], atol=2e-5, rtol=1e-3, msg=name)
    assert original is attention_smallllm.alibi_blockwise_attention_forward


_dense_block = attention_smallllm._alibi_causal_block


@pytest.mark.parametrize("alibi_scaling", SCALINGS)
def test_blockwise_cached_generation_matches_dense(alibi_scaling, small_blocks, monkeypatch):
    model = tiny_model("btlm", "sdpa", alibi_scaling=alibi_scaling)
    prompt = random_ids(model.config.vocab_size, (1, 20))
    kwargs = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": 0, "eos_token_id": None}
    with torch.no_grad():
        blockwise = model.generate(prompt, **kwargs)
        monkeypatch.setattr(attention_smallllm, "ALIBI_DENSE_MAX_ENTRIES", 10**12)
        dense = model.generate(prompt, **kwargs)
    assert torch.equal(blockwise, dense)


def test_padded_and_packed_rows_keep_the_dense_path(small_blocks, monkeypatch):
    model = tiny_model("btlm", "sdpa")
    monkeypatch.setattr(attention_smallllm, "alibi_blockwise_attention_forward",
                        lambda *a, **k: pytest.fail("blockwise path used for a masked row"))
    ids = random_ids(model.config.vocab_size, (2, 40))
    mask = torch.ones_like(ids)
    mask[1, :7] = 0
    packed = torch.cat([torch.arange(25), torch.arange(15)])[None].expand(2, -1)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
        model(input_ids=ids, position_ids=packed)
