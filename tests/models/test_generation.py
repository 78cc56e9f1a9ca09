"""KV-cache generation and padding: a cached forward must equal the uncached one, and a left-padded batch must
equal its rows run alone, for every family (RoPE and ALiBi) and every CPU attention implementation."""

import pytest
import torch

from .helpers import ALL_FAMILIES, CPU_ATTENTION, random_ids, tiny_model


@pytest.mark.parametrize("attn", CPU_ATTENTION)
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_incremental_decoding_matches_full_forward(family, attn):
    model = tiny_model(family, attn)
    ids = random_ids(model.config.vocab_size, (2, 20))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        out = model(ids[:, :12], use_cache=True)
        steps = [out.logits]
        cache = out.cache
        for t in range(12, 20):
            out = model(ids[:, t : t + 1], cache=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn", CPU_ATTENTION)
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_cached_and_uncached_greedy_generation_agree(family, attn):
    model = tiny_model(family, attn)
    prompt = random_ids(model.config.vocab_size, (1, 6))
    kwargs = dict(max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        cached = model.generate(prompt, use_cache=True, **kwargs)
        uncached = model.generate(prompt, use_cache=False, **kwargs)
        static = model.generate(prompt, cache_implementation="static", **kwargs)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, static)


@pytest.mark.parametrize("attn", CPU_ATTENTION)
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_left_padded_batch_matches_rows_alone(family, attn):
    model = tiny_model(family, attn)
    vocab = model.config.vocab_size
    short, long = random_ids(vocab, (1, 5)), random_ids(vocab, (1, 9))
    pad = 0
    batch = torch.cat([torch.cat([torch.full((1, 4), pad), short], dim=1), long], dim=0)
    attention_mask = torch.cat([torch.cat([torch.zeros(1, 4), torch.ones(1, 5)], 1), torch.ones(1, 9)]).long()
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=pad, eos_token_id=None)
    with torch.no_grad():
        batched = model.generate(batch, attention_mask=attention_mask, **kwargs)
        alone_short = model.generate(short, **kwargs)
        alone_long = model.generate(long, **kwargs)
        # logits of the real tokens, not only the argmax
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        padded_logits = model(batch, attention_mask=attention_mask, position_ids=position_ids).logits
        short_logits = model(short).logits
    assert torch.equal(batched[0, 9:], alone_short[0, 5:])
    assert torch.equal(batched[1, 9:], alone_long[0, 9:])
    torch.testing.assert_close(padded_logits[0, 4:], short_logits[0], atol=1e-5, rtol=1e-5)


def test_the_cache_argument_keeps_its_pre_5_24_name():
    """transformers 5.24 renamed `past_key_values` to `cache`; code written for the old name must still decode."""
    model = tiny_model("tinyllama")
    ids = random_ids(model.config.vocab_size, (1, 10))
    with torch.no_grad():
        full = model(ids).logits[:, -1]
        prefix = model(ids[:, :9], use_cache=True)
        step = model(ids[:, 9:], past_key_values=prefix.cache, use_cache=True)
    assert step.cache.get_seq_length() == 10
    torch.testing.assert_close(step.logits[:, -1], full, atol=1e-5, rtol=1e-5)
