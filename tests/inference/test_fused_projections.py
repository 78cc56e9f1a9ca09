"""Fused q/k/v and gate/up projections: the same logits and tokens as separate projections for every family, alone
and under oneDNN packing or dynamic int8, the same state dict, reversible, and used by load_for_inference."""

import pytest
import torch

from hf_smallllm import FAMILIES
from hf_smallllm.inference import (
    FusedProjection,
    InferenceOptions,
    ProjectionSlice,
    can_pack_linears,
    fuse_projections,
    load_for_inference,
    pack_linears,
    quantize_int8_dynamic,
    unfuse_projections,
)

from ..models.helpers import random_ids, tiny_model

GENERATE = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fused_model_computes_what_the_separate_projections_do(family):
    model = tiny_model(family).eval()
    ids = random_ids(model.config.vocab_size, (2, 9))
    with torch.no_grad():
        logits, tokens = model(ids).logits, model.generate(ids, **GENERATE)
        assert fuse_projections(model) == 2 * model.config.num_hidden_layers
        fused_logits, fused_tokens = model(ids).logits, model.generate(ids, **GENERATE)
    torch.testing.assert_close(fused_logits, logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(fused_tokens, tokens)
    attention = model.model.layers[0].self_attn
    assert isinstance(attention.q_proj, ProjectionSlice) and isinstance(attention.fused_q_k_v, FusedProjection)
    assert attention.fused_q_k_v._parts is None  # no activations held between forwards


@pytest.mark.skipif(not can_pack_linears(), reason="this torch build has no oneDNN CPU kernels")
def test_fused_then_packed_matches_and_packs_four_products_per_layer():
    model = tiny_model("tinyllama").eval()
    ids = random_ids(model.config.vocab_size, (1, 7))
    with torch.no_grad():
        logits = model(ids).logits
        fuse_projections(model)
        assert pack_linears(model, min_weights=0) == 4 * model.config.num_hidden_layers + 1  # qkv o gate_up down, head
        torch.testing.assert_close(model(ids).logits, logits, atol=1e-4, rtol=1e-4)


def test_fused_int8_model_matches_separate_int8():
    model = tiny_model("tinyllama").eval()
    ids = random_ids(model.config.vocab_size, (1, 7))
    with torch.no_grad():
        separate = quantize_int8_dynamic(model)(ids).logits
        fuse_projections(model)
        fused = quantize_int8_dynamic(model)(ids).logits
    # the key/value rows share the query's activation quantization when fused; scales are per tensor
    assert torch.nn.functional.cosine_similarity(fused.flatten(), separate.flatten(), dim=0) > 0.99


def test_fused_state_dict_is_the_original_and_unfusing_restores_modules(tmp_path):
    model = tiny_model("btlm")  # biases in its projections
    original = {key: value.clone() for key, value in model.state_dict().items()}
    fuse_projections(model)
    state = model.state_dict()
    assert set(state) == set(original)
    for key, value in original.items():
        torch.testing.assert_close(state[key], value, atol=0, rtol=0)
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path)
    assert all(torch.equal(reloaded.state_dict()[key], value) for key, value in original.items())
    assert unfuse_projections(model) == 2 * model.config.num_hidden_layers
    assert not any(isinstance(m, (FusedProjection, ProjectionSlice)) for m in model.modules())
    assert all(torch.equal(model.state_dict()[key], value) for key, value in original.items())


def test_load_for_inference_fuses_on_cpu_unless_compiled_or_told_not_to(tiny_checkpoint):
    model, _ = load_for_inference(tiny_checkpoint, InferenceOptions(pack_linears=False))
    assert any(isinstance(m, FusedProjection) for m in model.modules())
    model, _ = load_for_inference(tiny_checkpoint, InferenceOptions(pack_linears=False, fuse_projections=False))
    assert not any(isinstance(m, FusedProjection) for m in model.modules())
    model, _ = load_for_inference(tiny_checkpoint, InferenceOptions(compile=True))
    assert not any(isinstance(m, FusedProjection) for m in model.modules())


def test_a_fused_then_quantized_model_still_has_a_state_dict():
    model = quantize_int8_dynamic(fuse_projections_of(tiny_model("tinyllama")))
    keys = set(model.state_dict())
    assert any("fused_q_k_v.linear" in key for key in keys) and not any("q_proj" in key for key in keys)
    with pytest.raises(NotImplementedError, match="unfuse before quantizing"):
        unfuse_projections(model)


def fuse_projections_of(model):
    fuse_projections(model)
    return model
