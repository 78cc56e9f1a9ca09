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
    with pytest.raises(ValueError, match="out_features % 16"):
        Int4Linear(linear)


def test_quantized_model_uses_int8_where_int4_cannot_and_decodes_like_bf16():
    model = tiny_model("tinyllama", intermediate_size=80).eval().to(torch.bfloat16)  # 80 % 32 != 0: down falls back
    ids = random_ids(model.config.vocab_size, (1, 6))
    with torch.no_grad():
        reference = model(ids).logits.float()
    counts = quantize_int4_weight_only(model)
    layers = model.config.num_hidden_layers
    assert counts == {"int4": 6 * layers, "int8": layers + 1}  # down_proj per layer, and the output head
    assert isinstance(model.lm_head, Int8WeightOnlyLinear)
    with torch.no_grad():
        logits = model(ids).logits.float()
    assert torch.nn.functional.cosine_similarity(logits.flatten(), reference.flatten(), dim=0) > 0.95
    assert greedy_decode(model, ids, 4).tokens.numel() == 4
