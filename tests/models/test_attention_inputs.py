"""What the attention kernel is handed, which decides its speed: no materialised [q, kv] mask where sdpa can use its
causal fast path, and an ALiBi bias built once per forward (shared by every layer) and, while decoding, served
from a table kept across steps instead of being rebuilt."""

import torch
from transformers.modeling_utils import AttentionInterface

from hf_smallllm.models.attention_smallllm import SmallLLMAlibi

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


def test_alibi_bias_is_built_once_per_forward_and_kept_across_decoding_steps(monkeypatch):
    masks = spy_on_sdpa(monkeypatch)
    builds = []
    build = SmallLLMAlibi.forward
    monkeypatch.setattr(SmallLLMAlibi, "forward", lambda self, *a: builds.append(a) or build(self, *a))
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
    assert len(builds) == 1  # decoding steps built no bias
    assert [m.shape[-1] for m in steps] == [13, 14, 15]
    assert len({m.untyped_storage().data_ptr() for m in steps}) == 1  # views of the one kept table
