"""Attention backends beyond eager/sdpa: flex attention (forward only on CPU, through torch's reference kernel) and
FlashAttention-2 (GPU only; skipped cleanly without CUDA and flash-attn). Both must agree with sdpa, including
ALiBi, packed rows and left padding."""

import importlib.util

import pytest
import torch

from .helpers import random_ids, tiny_model
from .test_packing import packed_batch

HAS_FLASH = torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


@pytest.fixture
def flex_reference_kernel(monkeypatch):
    """Flex attention through torch's reference (uncompiled) kernel. torch 2.13's compiled CPU flex kernel is
    nondeterministic on some x86 VMs (seen on an AMD EPYC: 3 of 8 fresh compiles of a plain causal mask gave max
    errors of 1.3-2.0 or NaN against sdpa, single-threaded too): a torch bug, not ours. transformers' flex path
    (block mask from our packed positions, ALiBi as score_mod) runs unchanged up to the kernel call, which goes to
    `flex_attention` itself instead of its compiled wrapper, so these tests still check our masks and bias; the
    compiled kernel is checked on GPU (`benchmarks/gpu_check.py`, parts backends/packed/alibi)."""
    from torch.nn.attention.flex_attention import flex_attention
    from transformers.integrations import flex_attention as transformers_flex

    def reference_kernel(query, key, value, training=False, **kwargs):
        return flex_attention(query, key, value, **kwargs)

    monkeypatch.setattr(transformers_flex, "compile_friendly_flex_attention", reference_kernel)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["geb", "btlm"])
def test_flex_attention_matches_sdpa_on_packed_rows(family, flex_reference_kernel):
    flex, sdpa = tiny_model(family, "flex_attention"), tiny_model(family, "sdpa")
    _, input_ids, position_ids, _ = packed_batch(flex.config.vocab_size)
    with torch.no_grad():
        expected = sdpa(input_ids, position_ids=position_ids).logits
        got = flex(input_ids, position_ids=position_ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_FLASH, reason="needs a CUDA GPU with flash-attn installed")
@pytest.mark.parametrize("family", ["tinyllama", "geb", "btlm"])
def test_flash_attention_matches_sdpa(family):
    kwargs = dict(dtype=torch.bfloat16, device="cuda")
    flash = tiny_model(family, "flash_attention_2").to(**kwargs)
    sdpa = tiny_model(family, "sdpa").to(**kwargs)
    vocab = flash.config.vocab_size
    with torch.no_grad():
        ids = random_ids(vocab, (2, 33)).cuda()
        torch.testing.assert_close(flash(ids).logits, sdpa(ids).logits, atol=2e-2, rtol=2e-2)
        # packed rows: flash goes through the varlen kernel with cu_seq_lens built from position_ids
        _, input_ids, position_ids, _ = packed_batch(vocab)
        input_ids, position_ids = input_ids.cuda(), position_ids.cuda()
        torch.testing.assert_close(flash(input_ids, position_ids=position_ids).logits,
                                   sdpa(input_ids, position_ids=position_ids).logits, atol=2e-2, rtol=2e-2)
        # left padding (flash unpads through the 2D mask) on the real tokens
        mask = torch.ones(2, 12, dtype=torch.long, device="cuda")
        mask[0, :4] = 0
        prompt = random_ids(vocab, (2, 12)).cuda()
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        got = flash(prompt, attention_mask=mask, position_ids=position_ids).logits
        expected = sdpa(prompt, attention_mask=mask, position_ids=position_ids).logits
        torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], atol=2e-2, rtol=2e-2)
        # cached decoding: one new token against the cache equals the full forward's last position
        out = flash(prompt[:, :-1], attention_mask=mask[:, :-1], position_ids=position_ids[:, :-1], use_cache=True)
        step = flash(prompt[:, -1:], attention_mask=mask, position_ids=position_ids[:, -1:],
                     cache=out.cache, use_cache=True).logits
        torch.testing.assert_close(step[:, 0], got[:, -1], atol=2e-2, rtol=2e-2)
