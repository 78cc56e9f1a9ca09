"""cpu_decode's ISA handling: flags read from /proc/cpuinfo, rows that need a missing flag are reported, not run."""

from hf_smallllm.bench.measure import ISA_FLAGS, cpu_isa_flags


def test_isa_flags_cover_the_listed_flags():
    flags = cpu_isa_flags()
    assert set(flags) == set(ISA_FLAGS) and all(isinstance(v, bool) for v in flags.values())


def test_a_variant_needing_a_missing_flag_says_so():
    from benchmarks.cpu_decode import VARIANTS, _missing_flags

    no_bf16 = dict.fromkeys(ISA_FLAGS, False) | {"avx2": True}
    needs = VARIANTS["bf16"][3]
    assert _missing_flags(needs, no_bf16) == "needs avx512_bf16 or amx_bf16, which this CPU lacks"
    assert _missing_flags(needs, no_bf16 | {"amx_bf16": True}) is None
    assert _missing_flags(VARIANTS["fp32"][3], no_bf16) is None  # fp32 needs nothing


def test_linear_kernels_name_each_backend():
    import torch

    from benchmarks.cpu_decode import linear_kernels
    from hf_smallllm.inference import quantize_int8_dynamic
    from hf_smallllm.inference.weight_only import quantize_int4_weight_only

    from ..models.helpers import tiny_model

    assert "torch F.linear" in linear_kernels(tiny_model("tinyllama"))
    assert "fbgemm dynamic int8" in linear_kernels(quantize_int8_dynamic(tiny_model("tinyllama")))
    model = tiny_model("tinyllama").to(torch.bfloat16)
    quantize_int4_weight_only(model)
    assert linear_kernels(model).startswith("bfloat16: ") and "int4 weight-only" in linear_kernels(model)
