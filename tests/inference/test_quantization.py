"""Quantized CPU inference: torch.ao dynamic int8 and bitsandbytes 8/4-bit loading, with their memory footprint."""

import pytest
import torch

from hf_smallllm.inference import load_bnb_quantized, quantize_int8_dynamic, state_dict_bytes

from ..models.helpers import random_ids, tiny_model


def linear_weight_bytes(model, include_head: bool = True) -> int:
    head = model.get_output_embeddings()
    return sum(m.weight.numel() * 4 for m in model.modules()
               if isinstance(m, torch.nn.Linear) and (include_head or m is not head))


def test_int8_dynamic_quantization_stays_close_and_shrinks_weights():
    model = tiny_model("tinyllama")
    ids = random_ids(model.config.vocab_size, (2, 12))
    quantized = quantize_int8_dynamic(model)
    with torch.no_grad():
        reference, got = model(ids).logits, quantized(ids).logits
    # int8 weights with a scale per row: logits move by a small fraction of their spread
    assert (got - reference).abs().max() < 0.1 * reference.std() * 10
    agreement = (got.argmax(-1) == reference.argmax(-1)).float().mean()
    assert torch.equal(got.argmax(-1), reference.argmax(-1)) or agreement > 0.9
    saved = state_dict_bytes(model) - state_dict_bytes(quantized)
    assert saved > 0.7 * linear_weight_bytes(model)  # about 3/4 of the fp32 linear weights


@pytest.mark.parametrize("bits", [8, 4])
def test_bitsandbytes_loading_on_cpu(tmp_path, bits):
    bnb = pytest.importorskip("bitsandbytes")
    model = tiny_model("tinyllama")
    model.save_pretrained(tmp_path)
    quantized = load_bnb_quantized(tmp_path, bits=bits)  # tiny MLP width 172 is not a multiple of 32
    layer_type = bnb.nn.Linear8bitLt if bits == 8 else bnb.nn.Linear4bit
    assert isinstance(quantized.model.layers[0].self_attn.q_proj, layer_type)
    ids = random_ids(model.config.vocab_size, (1, 10))
    with torch.no_grad():
        reference, got = model(ids).logits, quantized(ids).logits
    assert torch.isfinite(got).all()
    assert (got - reference).abs().max() < 0.5
    # the decoder's linear layers shrink ~4x (8-bit) or ~8x (4-bit) against fp32; the output head stays unquantized
    linear = linear_weight_bytes(model, include_head=False)
    saved = state_dict_bytes(model) - state_dict_bytes(quantized)
    assert saved > (0.6 if bits == 8 else 0.75) * linear


def test_cpu_4bit_repack_is_kept_where_it_works_and_dropped_for_training(tmp_path):
    pytest.importorskip("bitsandbytes")
    from hf_smallllm.inference import prepare_bnb_4bit_for_cpu

    model = tiny_model("tinyllama", intermediate_size=192)  # every out_features a multiple of 32
    model.save_pretrained(tmp_path)
    quantized = load_bnb_quantized(tmp_path, bits=4)
    flags = [m.support_avx512bf16_for_cpu for n, m in quantized.named_modules() if n.endswith("q_proj")]
    with torch.no_grad():
        assert torch.isfinite(quantized(random_ids(256, (1, 6))).logits).all()
    assert prepare_bnb_4bit_for_cpu(quantized, training=True) >= 0
    assert not any(getattr(m, "support_avx512bf16_for_cpu", False) for m in quantized.modules())
    assert len(flags) == 2
