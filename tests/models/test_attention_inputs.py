"""What the attention kernel is handed, which decides its speed: no materialised [q, kv] mask where sdpa can use its
causal fast path, and an ALiBi bias built once per forward and shared by every layer, decoding steps included."""

import pytest
import torch
from transformers.modeling_utils import AttentionInterface

from hf_smallllm.models import attention_smallllm

from .helpers import random_ids, tiny_model


def spy_on_sdpa(monkeypatch) -> list:
    """Record the `attention_mask` every sdpa attention call receives."""
    masks = []
    sdpa = AttentionInterface._global_mapping["sdpa"]

    def spy(module, query, key, value, attention_mask, **kwargs):
        masks.append(attention_mask)
        return sdpa(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, "sdpa", spy)
    return masks


def test_unpadded_rope_rows_reach_sdpa_without_a_mask(monkeypatch):
    masks = spy_on_sdpa(monkeypatch)
    model = tiny_model("tinyllama")
    ids = random_ids(model.config.vocab_size, (2, 16))
    with torch.no_grad():
        out = model(ids, use_cache=True)
        model(ids[:, :1], cache=out.cache, use_cache=True)
    assert len(masks) == 2 * model.config.num_hidden_layers and all(m is None for m in masks)
    masks.clear()
    with torch.no_grad():  # left padding does need a mask
        model(ids, attention_mask=torch.tensor([[0] * 4 + [1] * 12, [1] * 16]))
    assert all(m is not None and m.shape[-2:] == (16, 16) for m in masks)


def test_alibi_bias_is_built_once_per_forward_and_shared_by_the_layers(monkeypatch):
    masks = spy_on_sdpa(monkeypatch)
    builds = []
    build = attention_smallllm.alibi_bias
    monkeypatch.setattr(attention_smallllm, "alibi_bias", lambda *a: builds.append(a) or build(*a))
    model = tiny_model("btlm")
    layers = model.config.num_hidden_layers
    ids = random_ids(model.config.vocab_size, (1, 12))
    with torch.no_grad():
        out = model(ids, use_cache=True)
        assert len(builds) == 1 and len({id(m) for m in masks}) == 1  # one bias, folded once, shared by the layers
        cache, token, steps = out.cache, out.logits[:, -1:].argmax(-1), []
        for _ in range(3):
            masks.clear()
            out = model(token, cache=cache, use_cache=True)
            cache, token = out.cache, out.logits[:, -1:].argmax(-1)
            assert len(masks) == layers and len({id(m) for m in masks}) == 1
            steps.append(masks[0])
    assert len(builds) == 4  # one per forward, decoding steps included: nothing is kept on the module between calls
    assert [m.shape[-2:] for m in steps] == [(1, 13), (1, 14), (1, 15)]


def _fake_flash(calls: list):
    def attend(module, query, key, value, attention_mask, **kwargs):
        calls.append((attention_mask, kwargs))
        return torch.zeros_like(query).transpose(1, 2), None

    return attend


@pytest.mark.parametrize("family", ["btlm", "tinyllama"])
def test_flash_attention_is_handed_slopes_and_packed_boundaries(family, monkeypatch):
    """What a flash-attn layer receives, checked on CPU with the kernel replaced: packed rows at batch size 2 become
    `cu_seq_lens` over the flattened batch (transformers infers them at batch size 1 only); ALiBi goes in as slopes,
    through our flash path (`alibi_flash_attention_forward`), RoPE through transformers' stock one."""
    calls = []
    if family == "btlm":
        monkeypatch.setattr(attention_smallllm, "alibi_flash_attention_forward", _fake_flash(calls))
    else:
        monkeypatch.setitem(AttentionInterface._global_mapping, "flash_attention_2", _fake_flash(calls))
    model = tiny_model(family, "sdpa")
    model.config._attn_implementation = "flash_attention_2"
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4], [0, 1, 2, 3, 0, 1, 0, 1]])
    with torch.no_grad():
        model(random_ids(model.config.vocab_size, (2, 8)), position_ids=position_ids)
    assert len(calls) == model.config.num_hidden_layers
    mask, kwargs = calls[0]
    assert mask is None and kwargs["cu_seq_lens_q"].tolist() == [0, 3, 8, 12, 14, 16]
    if family == "btlm":
        slopes = model.model.alibi.slopes.view(-1)
        torch.testing.assert_close(kwargs["alibi_slopes"], slopes)
    else:
        assert "alibi_slopes" not in kwargs
