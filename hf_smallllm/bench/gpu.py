"""GPU rows of the model benchmark: training MFU of a packed bf16 run, decode against the transformers twin, and
flash-attn 2's varlen kernel with ALiBi slopes against the dense-bias path.

MFU follows the PaLM paper (appendix B): model FLOPs per trained token = 6 N + 12 L H Q T, with N the parameters
that take part in matrix multiplies (all but the input embedding, which is a lookup), L layers, H heads of size Q
and T the row length; the achieved FLOP/s divided by the GPU's dense bf16 peak. Row lengths count whole, although
a packed row attends only within its documents, as TinyLlama's reported 56% (A100-40G) did. On a machine without
CUDA every row says "not measured" and why.
"""

import importlib.util
import time

import torch

from ..families import FAMILIES, preset_config

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets; matched against
# torch.cuda.get_device_name(), most specific first.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM / HBM3
    ("H200", 989.4),
    ("GH200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
)


def peak_bf16_flops(device_name: str) -> float | None:
    """The dense bf16 peak FLOP/s of a GPU named like `torch.cuda.get_device_name()`, or None if unknown."""
    for marker, tflops in PEAK_BF16_TFLOPS:
        if marker in device_name:
            return tflops * 1e12
    return None


def training_flops_per_token(config, row_length: int) -> float:
    """PaLM's model FLOPs per trained token: 6 N + 12 L H Q T (see the module docstring)."""
    from ..families import family_of

    with torch.device("meta"):
        model = FAMILIES[family_of(config)].causal_lm_class(config)
    matmul_params = model.num_parameters() - model.get_input_embeddings().weight.numel()
    if config.tie_word_embeddings:  # the tied matrix is the output head's: it does multiply
        matmul_params += model.get_input_embeddings().weight.numel()
    attention = 12 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * row_length
    return 6 * matmul_params + attention


def _attention_for_gpu() -> str:
    return "flash_attention_2" if importlib.util.find_spec("flash_attn") is not None else "sdpa"


def _packed_position_ids(rows: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """Per-document positions: documents of 128 to `length` tokens, as the packing of real corpora gives."""
    out = []
    for _ in range(rows):
        row, left = [], length
        while left > 0:
            n = min(left, int(torch.randint(128, max(129, length), (1,), generator=generator)))
            row.append(torch.arange(n))
            left -= n
        out.append(torch.cat(row))
    return torch.stack(out)


def train_tokens_per_second(model, rows: int, length: int, steps: int = 10, warmup: int = 3) -> float:
    """Tokens/s of full training steps (forward, backward, fused AdamW) on packed rows, on the model's device."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (rows, length), generator=generator).to(device)
    position_ids = _packed_position_ids(rows, length, generator).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    model.train()

    def step():
        loss = model(ids, position_ids=position_ids, labels=ids, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    optimizer = None  # frees the AdamW state now (`step` shares this variable, so it is cleared, not deleted)
    model.zero_grad(set_to_none=True)
    return rows * length * steps / seconds


def gpu_rows(family: str = "tinyllama", size: str = "published", row_length: int = 2048, rows: int = 4) -> list:
    """Training MFU, decode against the twin (bf16, CUDA) and BTLM's flash-attn ALiBi varlen rows."""
    from .suite import Row, SuiteSettings, measure_pair

    if not torch.cuda.is_available():
        return not_measured_gpu_rows()
    device_name = torch.cuda.get_device_name(0)
    attention = _attention_for_gpu()
    result = []

    # training MFU
    config = preset_config(family, size, attn_implementation=attention)
    torch.manual_seed(0)
    model = FAMILIES[family].causal_lm_class(config).to("cuda", torch.bfloat16)
    rate = train_tokens_per_second(model, rows, row_length)
    del model
    torch.cuda.empty_cache()
    achieved = rate * training_flops_per_token(config, row_length)
    peak = peak_bf16_flops(device_name)
    metric = f"training MFU (bf16, {attention}, packed {rows}x{row_length})"
    if peak is None:
        result.append(Row(family, size, metric, "tok/s", rate, None,
                          note=f"{achieved / 1e12:.0f} TFLOP/s; MFU not measured: unknown bf16 peak of {device_name}"))
    else:
        result.append(Row(family, size, metric, "TFLOP/s", achieved / 1e12, peak / 1e12, f"{device_name} bf16 peak",
                          note=f"{achieved / peak:.0%} MFU at {rate:,.0f} tokens/s", is_comparison=False))

    # prefill and decode against the transformers twin, in bf16 on the GPU
    settings = SuiteSettings(families=(family,), sizes=(size,), dtype=torch.bfloat16, device="cuda",
                             memory_budget_bytes=torch.cuda.mem_get_info()[0])
    for row in measure_pair(family, size, settings):
        row.metric = f"CUDA bf16 {row.metric}"
        result.append(row)

    # ALiBi through flash-attn's varlen kernel (slopes) against sdpa with the dense bias mask
    if attention == "flash_attention_2":
        rates = {}
        for implementation in ("flash_attention_2", "sdpa"):
            torch.manual_seed(0)
            btlm = FAMILIES["btlm"].causal_lm_class(preset_config("btlm", size, attn_implementation=implementation))
            rates[implementation] = train_tokens_per_second(btlm.to("cuda", torch.bfloat16), rows, row_length)
            del btlm
            torch.cuda.empty_cache()
        result.append(Row("btlm", size, f"training tokens/s, packed {rows}x{row_length}: flash-attn 2 varlen with "
                                        "ALiBi slopes", "tok/s", rates["flash_attention_2"], rates["sdpa"],
                          "sdpa with the dense ALiBi bias"))
    else:
        result.append(Row("btlm", size, "flash-attn 2 varlen with ALiBi slopes", "", None, None,
                          note="not measured: flash-attn is not installed (pip install 'hf-smallllm[gpu]')"))
    return result


def not_measured_gpu_rows() -> list:
    from .suite import Row

    reason = "not measured: no CUDA GPU on this machine"
    return [
        Row("tinyllama", "published", metric, "", None, None, note=reason)
        for metric in ("training MFU (bf16, flash-attn 2, packed varlen)", "decode tokens/s (bf16, CUDA)",
                       "flash-attn 2 varlen with ALiBi slopes (BTLM) tokens/s")
    ]


__all__ = ["PEAK_BF16_TFLOPS", "gpu_rows", "not_measured_gpu_rows", "peak_bf16_flops", "train_tokens_per_second",
           "training_flops_per_token"]
