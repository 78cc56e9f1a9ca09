"""Memory of a published-size model under bitsandbytes quantization, computed from a quantized state dict.

Quantizing all of BTLM-3B would first need its 10.6 GB of float32 weights; instead one published-size decoder
layer (plus the embeddings, final norm and head) is saved, loaded through `BitsAndBytesConfig`, and its state
dict measured tensor by tensor; the per-layer bytes are then multiplied by the number of layers. Every layer has
the same shapes, so the extrapolation is exact up to the few bytes of per-tensor metadata.
"""

import tempfile
from pathlib import Path

import torch

from ..families import FAMILIES, preset_config


def _layer_bytes(state: dict, layer: int) -> int:
    prefix = f"model.layers.{layer}."
    return sum(v.numel() * v.element_size() for k, v in state.items() if k.startswith(prefix) and torch.is_tensor(v))


def quantized_footprint(family: str = "btlm", bits: int = 4, compute_dtype: torch.dtype = torch.bfloat16) -> dict:
    """Bytes of `family`'s published model with bitsandbytes `bits`-bit linear layers (embeddings and norms in
    `compute_dtype`), and the float32 / bf16 sizes for comparison."""
    from ..inference.quantization import load_bnb_quantized

    full = preset_config(family)
    one_layer = preset_config(family, num_hidden_layers=1)
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        FAMILIES[family].causal_lm_class(one_layer).save_pretrained(folder)
        quantized = load_bnb_quantized(Path(folder), bits, compute_dtype=compute_dtype)
        state = quantized.state_dict()
    layer = _layer_bytes(state, 0)
    seen, rest = set(), 0
    for key, value in state.items():
        if key.startswith("model.layers.") or not torch.is_tensor(value):
            continue
        pointer = value.untyped_storage().data_ptr()
        if pointer in seen:  # a tied head shares the embedding
            continue
        seen.add(pointer)
        rest += value.numel() * value.element_size()
    total = rest + layer * full.num_hidden_layers
    with torch.device("meta"):
        params = FAMILIES[family].causal_lm_class(full).num_parameters()
    return {"family": family, "bits": bits, "bytes": total, "per_layer_bytes": layer, "other_bytes": rest,
            "float32_bytes": params * 4, "bfloat16_bytes": params * 2, "parameters": params}
