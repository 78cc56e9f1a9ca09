"""GPU benchmark rows: the MFU arithmetic and peak table (checked anywhere), "not measured" without CUDA, and a real
run of the rows on a GPU (skipped without one)."""

import pytest
import torch

from hf_smallllm import FAMILIES, preset_config
from hf_smallllm.bench.gpu import gpu_rows, peak_bf16_flops, training_flops_per_token


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.4),
    ("NVIDIA A100-SXM4-40GB", 312.0), ("NVIDIA L4", 121.0), ("Tesla T4", None),
])
def test_peak_bf16_flops_by_device_name(name, tflops):
    assert peak_bf16_flops(name) == (None if tflops is None else tflops * 1e12)


def _matmul_params_by_hand(c) -> int:
    q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    per_layer = c.hidden_size * (2 * q + 2 * kv) + 3 * c.hidden_size * c.intermediate_size + 2 * c.hidden_size
    return c.num_hidden_layers * per_layer + c.hidden_size + c.vocab_size * c.hidden_size  # final norm + head


def test_training_flops_follow_palm_for_tinyllama():
    config = preset_config("tinyllama")
    n = _matmul_params_by_hand(config)
    assert n == 1_100_048_384 - 32_000 * 2048  # TinyLlama-1.1B's parameters without the input embedding
    expected = 6 * n + 12 * 22 * 32 * 64 * 2048
    assert training_flops_per_token(config, 2048) == expected


def test_training_flops_count_a_tied_embedding_once_as_the_output_head():
    config = preset_config("btlm", "tiny")
    with torch.device("meta"):
        total = FAMILIES["btlm"].causal_lm_class(config).num_parameters()
    attention = 12 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * 64
    assert training_flops_per_token(config, 64) == 6 * total + attention


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the rows of a machine without CUDA")
def test_without_cuda_every_gpu_row_says_not_measured():
    rows = gpu_rows()
    assert len(rows) == 3
    assert all(r.ours is None and r.reference is None and r.note == "not measured: no CUDA GPU on this machine"
               for r in rows)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_rows_measure_on_a_small_model():
    rows = gpu_rows("tinyllama", "small", row_length=256, rows=2)
    mfu = rows[0]
    assert mfu.metric.startswith("training MFU") and mfu.ours > 0
    assert any(r.metric.startswith("CUDA bf16 decode tokens/s (batch 1)") and r.ratio for r in rows)
