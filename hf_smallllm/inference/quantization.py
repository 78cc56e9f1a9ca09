"""Quantized inference: torch's dynamic int8 linear layers, and bitsandbytes 8-bit / 4-bit loading.

- `quantize_int8_dynamic`: weights of every `nn.Linear` stored as int8 with a scale per output row, activations
  quantized on the fly (torch.ao's `quantize_dynamic`, CPU). Roughly 4x less weight memory than fp32; the speed and
  perplexity cost on real text is measured by `benchmarks.run` (see docs/performance.md).
- `bnb_config` / `load_bnb_quantized`: transformers' `BitsAndBytesConfig` loading of any hf_smallllm checkpoint in
  8-bit (LLM.int8) or 4-bit (NF4/FP4, optional double quantization); bitsandbytes runs on CPU and CUDA.
- `prepare_bnb_4bit_for_cpu`: bitsandbytes' CPU 4-bit layers repack their weights into a faster CPU layout on the
  first inference forward. The repack asserts `out_features % 32 == 0` (BTLM's MLP width 6826 fails it) and, once
  done, stops gradients from flowing through the layer (LoRA on top then silently stops learning). This turns the
  repack off where it would crash (it also needs `in_features` to be a multiple of the quantization block size),
  or everywhere when the model will be trained.
- `state_dict_bytes`: the memory a model's weights occupy, summed over its state dict, so quantized layouts
  (packed 4-bit weights plus their absmax/quant-map tensors) are counted as stored.
"""

import warnings

import torch
from torch import nn


def quantize_int8_dynamic(model: nn.Module) -> nn.Module:
    """A copy of `model` whose `nn.Linear` layers are torch.ao dynamic int8 layers (CPU inference only)."""
    with warnings.catch_warnings():
        # torch 2.1x deprecates the quantized tensor constructors this uses, not the feature; keep output readable
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao\..*")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*")
        # per-channel weight scales: a row's range sets its own scale, which matters more once q/k/v or gate/up are
        # stacked into one matrix (fused_projections.py) and costs nothing in speed
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=False)


def bnb_config(bits: int, compute_dtype: torch.dtype = torch.float32, quant_type: str = "nf4",
               double_quant: bool = True):
    """A `BitsAndBytesConfig` for 8-bit or 4-bit loading."""
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    if bits == 4:
        if quant_type not in ("nf4", "fp4"):
            raise ValueError(f"quant_type={quant_type!r}: bitsandbytes 4-bit supports 'nf4' or 'fp4'")
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                                  bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_use_double_quant=double_quant)
    raise ValueError(f"bits={bits}: bitsandbytes loading supports 8 or 4 bits")


# bitsandbytes' CPU weight repack works on blocks of this many output features
_CPU_4BIT_BLOCK = 32


def prepare_bnb_4bit_for_cpu(model: nn.Module, training: bool = False) -> int:
    """Turn off bitsandbytes' CPU 4-bit weight repacking on layers whose shape it cannot handle, or on every layer
    when `training` (the repacked layout passes no gradient). Returns the number of layers changed."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    changed = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and getattr(module, "support_avx512bf16_for_cpu", False):
            quant_state = getattr(module.weight, "quant_state", None)
            blocksize = getattr(quant_state, "blocksize", 64)
            if training or module.out_features % _CPU_4BIT_BLOCK or module.in_features % blocksize:
                module.support_avx512bf16_for_cpu = False
                changed += 1
    return changed


def load_bnb_quantized(path, bits: int, device: str = "cpu", compute_dtype: torch.dtype = torch.float32,
                       training: bool = False, **kwargs):
    """Load an hf_smallllm checkpoint with bitsandbytes weights (`AutoModelForCausalLM` + `BitsAndBytesConfig`).
    On CPU, 4-bit layers are made safe with `prepare_bnb_4bit_for_cpu(model, training)`."""
    from transformers import AutoModelForCausalLM

    import hf_smallllm  # noqa: F401  (registers the model types)

    model = AutoModelForCausalLM.from_pretrained(
        path, quantization_config=bnb_config(bits, compute_dtype), device_map=device, dtype=compute_dtype, **kwargs
    )
    if bits == 4 and str(device).startswith("cpu"):
        prepare_bnb_4bit_for_cpu(model, training=training)
    return model


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of every tensor in `model.state_dict()`, each shared storage counted once."""
    seen, total = set(), 0
    for value in model.state_dict().values():
        if isinstance(value, torch.Tensor):
            key = (value.untyped_storage().data_ptr(), value.dtype) if value.device.type != "meta" else id(value)
            if key in seen:
                continue
            seen.add(key)
            total += value.numel() * value.element_size()
        elif isinstance(value, tuple):  # torch.ao packed params serialise as (weight, bias) tuples
            for item in value:
                if isinstance(item, torch.Tensor):
                    total += item.numel() * item.element_size()
    return total


__all__ = ["bnb_config", "load_bnb_quantized", "prepare_bnb_4bit_for_cpu", "quantize_int8_dynamic", "state_dict_bytes"]
