"""Weight-only int4/int8 layers on torch's CPU kernels: the product of the dequantized weights, shape fallbacks, and
a quantized model that decodes close to its bf16 original."""

import pytest
import torch
from torch import nn

from hf_smallllm.inference.lean_decode import greedy_decode
from hf_smallllm.inference.weight_only import (
    Int4Linear,
    Int8WeightOnlyLinear,
    can_quantize_int4,
    quantize_int4_weight_only,
)

from ..models.helpers import random_ids, tiny_model

pytestmark = pytest.mark.skipif(not can_quantize_int4(), reason="this torch build lacks the CPU int4 kernels")


def _dequantized_int4(layer: Int4Linear, weight: torch.Tensor) -> torch.Tensor:
    """The weight the kernel multiplies by, rebuilt from the layer's scales and offsets and a requantization."""
    scale, offset = layer.scales_and_zeros.float().transpose(0, 1).unbind(-1)  # [out, groups]
    groups = weight.view(layer.out_features, -1, layer.group_size)
    q = ((groups - (offset - 8 * scale).unsqueeze(-1)) / scale.unsqueeze(-1)).round().clamp(0, 15)
    return ((q - 8) * scale.unsqueeze(-1) + offset.unsqueeze(-1)).view_as(weight)


def test_int4_linear_multiplies_by_its_dequantized_weight():
    torch.manual_seed(0)
    linear = nn.Linear(128, 48, bias=True)
    layer = Int4Linear(linear, group_size=32)
    x = torch.randn(2, 3, 128)
    reference = x @ _dequantized_int4(layer, linear.weight.detach()).T + linear.bias.detach()
    out = layer(x)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 48)
    torch.testing.assert_close(out, reference, atol=0.15, rtol=0.02)  # bf16 activations and scales
    error = (layer(x) - linear(x)).abs().mean() / linear(x).abs().mean()
    assert error < 0.15  # 4 bits in groups of 32 keep the product within a few percent


def test_int8_weight_only_linear_is_close_to_the_original():
    torch.manual_seed(0)
    linear = nn.Linear(100, 30)  # rows of 100 (not a multiple of 16): padded, or the kernel reads past them
    x = torch.randn(4, 100)
    torch.testing.assert_close(Int8WeightOnlyLinear(linear)(x), linear(x), atol=0.05, rtol=0.05)

def test_int4_linear_pads_shapes_the_kernel_refuses():
    torch.manual_seed(0)
    linear = nn.Linear(80, 30)  # 30 output rows (not a multiple of 16), 80 inputs (not a multiple of 32)
    layer = Int4Linear(linear, group_size=32)
    x = torch.randn(3, 80)
    out = layer(x)
    assert out.shape == (3, 30)
    assert (out - linear(x)).abs().mean() / linear(x).abs().mean() < 0.15


def test_quantized_model_is_int4_with_an_int8_head_and_decodes_like_bf16():
    model = tiny_model("tinyllama", intermediate_size=80).eval().to(torch.bfloat16)  # 80 % 32 != 0: padded
    ids = random_ids(model.config.vocab_size, (1, 6))
    with torch.no_grad():
        reference = model(ids).logits.float()
    counts = quantize_int4_weight_only(model)
    layers = model.config.num_hidden_layers
    assert counts == {"int4": 7 * layers, "int8": 1}  # only the output head is int8
    assert isinstance(model.lm_head, Int8WeightOnlyLinear)
    with torch.no_grad():
        logits = model(ids).logits.float()
    assert torch.nn.functional.cosine_similarity(logits.flatten(), reference.flatten(), dim=0) > 0.95
    assert greedy_decode(model, ids, 4).tokens.numel() == 4


def test_int8_weight_only_linear_quantizes_rows_in_steps_like_all_at_once(monkeypatch):
    from hf_smallllm.inference import weight_only

    torch.manual_seed(0)
    linear = nn.Linear(100, 70).to(torch.bfloat16)
    monkeypatch.setattr(weight_only, "_INT8_ROWS_PER_STEP", 16)  # 70 rows: four full steps and a partial one
    layer = Int8WeightOnlyLinear(linear)
    weight = linear.weight.detach().float()
    scale = (weight.abs().amax(-1) / 127).clamp(min=torch.finfo(torch.bfloat16).tiny)
    quantized = (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
    assert torch.equal(layer.weight_int8, nn.functional.pad(quantized, (0, 12)))  # 100 -> 112 columns
    assert torch.equal(layer.scale, scale.to(torch.bfloat16))


def test_int4_linear_quantizes_rows_in_steps_like_all_at_once(monkeypatch):
    from hf_smallllm.inference import weight_only

    torch.manual_seed(0)
    linear = nn.Linear(80, 70).to(torch.bfloat16)  # padded to 80 rows of 96 inputs
    monkeypatch.setattr(weight_only, "_INT4_ROWS_PER_STEP", 1 << 20)
    whole = Int4Linear(linear)
    monkeypatch.setattr(weight_only, "_INT4_ROWS_PER_STEP", 32)  # two full steps and a partial one with padding
    stepped = Int4Linear(linear)
    assert torch.equal(stepped.packed_weight, whole.packed_weight)
    assert torch.equal(stepped.scales_and_zeros, whole.scales_and_zeros)
