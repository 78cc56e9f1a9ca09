"""Inference: fast CPU decoding, quantization, and streamed generation."""

from .cpu_linear import (
    LinearsChoice,
    PackedLinear,
    can_pack_linears,
    pack_linears,
    pack_linears_if_faster,
    unpack_linears,
)
from .fused_projections import FusedProjection, ProjectionSlice, fuse_projections, unfuse_projections
from .generation import InferenceOptions, enable_compiled_decoding, load_for_inference, stream_generate
from .quantization import (
    bnb_config,
    load_bnb_quantized,
    prepare_bnb_4bit_for_cpu,
    quantize_int8_dynamic,
    state_dict_bytes,
)

__all__ = [
    "FusedProjection",
    "InferenceOptions",
    "LinearsChoice",
    "PackedLinear",
    "ProjectionSlice",
    "bnb_config",
    "enable_compiled_decoding",
    "fuse_projections",
    "can_pack_linears",
    "load_bnb_quantized",
    "load_for_inference",
    "pack_linears",
    "pack_linears_if_faster",
    "prepare_bnb_4bit_for_cpu",
    "quantize_int8_dynamic",
    "state_dict_bytes",
    "stream_generate",
    "unfuse_projections",
    "unpack_linears",
]
