"""Lean greedy decoding (static cache, one-pass RMSNorm, rotary table): the same tokens as `generate()` and logits
within 1e-5 in float32, on every path `load_for_inference` builds (plain, fused projections, oneDNN-packed, int8)."""

import pytest
import torch

from hf_smallllm.inference import fuse_projections, pack_linears, quantize_int8_dynamic
from hf_smallllm.inference.cpu_linear import can_pack_linears
from hf_smallllm.inference.lean_decode import (
    FusedRMSNorm,
    RotaryTable,
    greedy_decode,
    prepare_lean_decoding,
    undo_lean_decoding,
)

from ..models.helpers import random_ids, tiny_model


def _generate(model, ids, new_tokens):
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, eos_token_id=None,
                             output_logits=True, return_dict_in_generate=True)
    return out.sequences[0, ids.shape[1]:], torch.stack([step[0] for step in out.logits])


def _fused_packed(model):
    fuse_projections(model)
    if can_pack_linears():
        pack_linears(model, min_weights=0)
    return model


@pytest.mark.parametrize("path", ["plain", "fused-packed"])
@pytest.mark.parametrize("family", ["tinyllama", "geb", "btlm"])
def test_lean_greedy_decode_matches_generate(family, path):
    model = tiny_model(family).eval()
    if path == "fused-packed":
        _fused_packed(model)
    ids = random_ids(model.config.vocab_size, (1, 7))
    tokens, logits = _generate(model, ids, 12)
    keys = set(model.state_dict())
    swapped = prepare_lean_decoding(model)
    assert swapped["rms_norm"] == (0 if family == "btlm" else 2 * model.config.num_hidden_layers + 1)
    assert swapped["rotary_table"] == (0 if family == "btlm" else 1)  # BTLM: ALiBi and LayerNorm, nothing to swap
    assert set(model.state_dict()) == keys  # saves like the original
    result, lean_logits = greedy_decode(model, ids, 12, return_logits=True)
    assert torch.equal(result.tokens, tokens)
    torch.testing.assert_close(lean_logits, logits, atol=1e-5, rtol=0)
    assert result.decode_seconds > 0 and result.decode_tokens_per_second > 0


def test_lean_int8_decode_gives_the_tokens_of_generate():
    model = tiny_model("tinyllama").eval()
    fuse_projections(model)
    model = quantize_int8_dynamic(model)
    ids = random_ids(model.config.vocab_size, (1, 6))
    tokens, _ = _generate(model, ids, 10)
    prepare_lean_decoding(model)
    assert torch.equal(greedy_decode(model, ids, 10).tokens, tokens)


def test_lean_modules_are_swapped_and_restored():
    model = tiny_model("tinyllama").eval()
    prepare_lean_decoding(model)
    assert isinstance(model.model.norm, FusedRMSNorm) and isinstance(model.model.rotary_emb, RotaryTable)
    x = torch.randn(1, 3, model.config.hidden_size)
    torch.testing.assert_close(model.model.norm(x), model.model.norm.original[0](x), atol=1e-6, rtol=1e-6)
    bf16 = x.to(torch.bfloat16)
    model.model.norm.weight.data = model.model.norm.weight.data.to(torch.bfloat16)
    torch.testing.assert_close(model.model.norm(bf16), model.model.norm.original[0](bf16))  # bf16: same roundings
    model.model.norm.weight.data = model.model.norm.weight.data.float()
    positions = torch.tensor([[0, 5, 2]])
    torch.testing.assert_close(model.model.rotary_emb(x, positions), model.model.rotary_emb.rotary(x, positions),
                               atol=0, rtol=0)  # a table of the same formula: identical values
    beyond = torch.tensor([[model.model.rotary_emb.length + 3]])  # past the table: computed as before
    rotary = model.model.rotary_emb
    torch.testing.assert_close(rotary(x[:, :1], beyond), rotary.rotary(x[:, :1], beyond))
    undo_lean_decoding(model)
    assert type(model.model.norm).__name__ == "SmallLLMRMSNorm"
    assert type(model.model.rotary_emb).__name__ == "SmallLLMRotaryEmbedding"


def test_greedy_decode_stops_at_eos_and_reports_tokens():
    model = tiny_model("tinyllama").eval()
    ids = random_ids(model.config.vocab_size, (1, 5))
    full = greedy_decode(model, ids, 8).tokens
    seen = []
    stopped = greedy_decode(model, ids[0], 8, eos_token_id=[int(full[2])], on_token=seen.append).tokens
    first = next(i for i, t in enumerate(full.tolist()) if t == int(full[2]))
    assert stopped.tolist() == full[: first + 1].tolist() == seen


def test_greedy_decode_refuses_bad_input():
    from hf_smallllm.errors import UsageValueError

    model = tiny_model("tinyllama").eval()
    with pytest.raises(UsageValueError, match="max_new_tokens"):
        greedy_decode(model, torch.tensor([[3, 4]]), 0)
    with pytest.raises(UsageValueError, match="one prompt"):
        greedy_decode(model, torch.tensor([[3, 4], [5, 6]]), 2)
    with pytest.raises(UsageValueError, match="no tokens"):
        greedy_decode(model, torch.zeros(1, 0, dtype=torch.long), 2)
