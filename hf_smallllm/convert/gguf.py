"""Export of a package checkpoint to one GGUF file for llama.cpp, written with the `gguf` package (no llama.cpp
checkout), and a reference forward that computes what llama.cpp computes from such a file.

Where each family goes (the `gguf=` field of its record, `hf_smallllm/families/<name>.py`; llama.cpp's graphs read
in its `src/models/{llama,chatglm,jais}.cpp`, as vendored by llama-cpp-python 0.3.36):

- TinyLlama, ChuXin, Skywork -> `llama`: Llama 2 exactly (Skywork's RMSNorm eps 1e-6 is metadata).
- GEB -> `chatglm`: RoPE on the first half of each head with adjacent pairs is llama.cpp's NORM rope over
  `rope.dimension_count` = head_dim / 2 dimensions; `llama` insists on rotating the whole head.
- BTLM -> `jais`: ALiBi (max bias 8 = the standard slopes), LayerNorm with biases, biases on every linear layer,
  SwiGLU with SiLU on `c_fc2`, scores / d.

The tokenizer kind comes from the checkpoint's tokenizer (`gguf_vocab.py`): SentencePiece BPE as `llama`, byte-level
BPE as `gpt2` with `deepseek-llm` (ChuXin) or `gpt-2` (BTLM) pre-tokenization.

How the tensors change on the way:

- `llama`/`chatglm` rotate adjacent pairs (2i, 2i+1) over the first `rope.dimension_count` dimensions of a head. A
  config with `rope_layout="half"` (pairs i, i + r/2) has those rows of q/k permuted into adjacent pairs, exactly the
  permutation llama.cpp's own converter applies to Llama weights; `interleaved` configs need none.
- `chatglm` fuses gate and up into one `ffn_up` [2 x ffn, hidden] (SwiGLU on its two halves, gate first).
- `jais` fuses q, k, v into `attn_qkv` with bias. It has no embedding or logit multipliers and scales scores by 1/d:
  the muP multipliers are folded into the weights (token embedding x `mup_embeddings_scale`; a separate `output`
  x `mup_output_alpha / width multiplier`, so a tied BTLM head becomes its own tensor) and a model that scales by
  1/sqrt(d) has its q rows and bias multiplied by sqrt(d).
- ALiBi slopes: llama.cpp derives them from `attention.max_alibi_bias` (8 gives 2^(-8k/n), and the interleaved
  extension for head counts that are not powers of two, like ours); `alibi_scaling` (position interpolation) has
  no llama.cpp equivalent and is refused.

Output types: f32, f16, bf16, q8_0 (2-D tensors; 1-D norms and biases stay f32) and q4_0 (2-D tensors in Q4_0,
the output head in Q8_0, as llama.cpp keeps its output head at higher precision). A row whose length is not a
multiple of the 32-wide quantization block falls back to Q8_0, then to f16 (e.g. BTLM's 6826-wide ffn_down).

`package_to_gguf` plans every tensor and the tokenizer (`gguf_vocab.py`) before writing, writes under a temporary
name next to the output, reads the file back with `gguf.GGUFReader` (architecture, metadata, tensor names, shapes
and types), runs `gguf_reference.gguf_reference_logits` (a separate module: export writes, the reference
forward reads) on it against the package model on the same tokens, and only then renames
it into place.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UsageFileExistsError, UsageFileNotFoundError, UsageValueError
from ..families import FAMILIES, family_of
from ..layouts import GGUF_ARCHITECTURES, GGUFArchitecture
from ..models.configuration_smallllm import SmallLLMConfig
from .configs import InexpressibleConfigError
from .gguf_file import InvalidGGUFError, check_gguf_file_complete, check_output_file
from .gguf_reference import gguf_reference_logits
from .gguf_vocab import GGUFVocab, gguf_vocab
from .verify import DEFAULT_LENGTH, LogitCheck, check_logits, logit_check_fields, logit_check_line, verification_ids

OUTTYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")
# llama.cpp's LlamaFileType of each output type (general.file_type)
_FILE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "bf16": 32}
# Default logit-check tolerance per output type: the reference runs the GGUF's own (rounded / dequantized) weights,
# the package model the same rounding for f16/bf16 and the exact weights otherwise (measured on tiny models: f32
# ~1e-6, f16 ~1e-3, bf16 ~1e-2, q8_0 ~0.02, q4_0 ~0.3; the quantized types only guard against gross mistakes).
DEFAULT_TOLERANCES = {"f32": 1e-4, "f16": 2e-2, "bf16": 1e-1, "q8_0": 0.25, "q4_0": 2.0}
_BLOCK = 32  # Q8_0 / Q4_0 block length along a row


# ------------------------------------------------------------------------------------------------ architectures
def _alibi_max_bias(slopes: torch.Tensor, num_heads: int) -> float | None:
    """The llama.cpp `max_alibi_bias` that reproduces `slopes`, or None when none does. Slopes stored in bf16 or
    fp16 match to their own precision (a whole-number max bias, BTLM's 8, is preferred when it fits)."""
    n_log2 = 2 ** math.floor(math.log2(num_heads))
    if not 0.0 < float(slopes[0]) < 1.0:  # llama.cpp's slopes are powers of 2^(-max_bias / n), max_bias > 0
        return None
    max_bias = -math.log2(float(slopes[0])) * n_log2
    rtol = max(1e-5, torch.finfo(slopes.dtype).eps if slopes.is_floating_point() else 0.0)
    for candidate in (float(round(max_bias)), max_bias):
        if candidate <= 0:
            continue
        m0, m1 = 2.0 ** (-candidate / n_log2), 2.0 ** (-candidate / 2.0 / n_log2)
        expected = torch.tensor([m0 ** (h + 1) if h < n_log2 else m1 ** (2 * (h - n_log2) + 1)
                                 for h in range(num_heads)], dtype=torch.float64)
        if torch.allclose(slopes.double().flatten(), expected, rtol=rtol, atol=0):
            return candidate
    return None


def _reasons(config: SmallLLMConfig, arch: GGUFArchitecture) -> list[str]:
    """Every feature of `config` that llama.cpp's `arch` graph cannot compute (empty: it can)."""
    name = arch.name
    reasons = []
    if config.hidden_act != "silu":
        reasons.append(f"hidden_act={config.hidden_act!r} (llama.cpp's {name} gates with SiLU)")
    if arch.positions == "rope":
        reasons += _rope_reasons(config, name, arch.full_rotary)
    else:
        if config.position_embedding_type != "alibi":
            reasons.append(f"position_embedding_type={config.position_embedding_type!r} ({name} uses ALiBi)")
        if config.alibi_scaling is not None:
            reasons.append(f"alibi_scaling={config.alibi_scaling} (llama.cpp computes ALiBi slopes from one max bias; "
                           "dividing them by a position-interpolation factor has no equivalent)")
        if config.norm_type != "layernorm":
            reasons.append(f"norm_type={config.norm_type!r} ({name} uses LayerNorm with bias)")
    if arch.biases == "qkv" and (config.attention_out_bias or config.mlp_bias):
        reasons.append(f"biases on the attention output or the MLP ({name} has biases on q/k/v only)")
    if arch.biases == "all":
        missing = [n for n in ("attention_bias", "attention_out_bias", "mlp_bias") if not getattr(config, n)]
        if missing:
            reasons.append(f"{', '.join(missing)} = False ({name} requires biases on every linear layer; zero biases "
                           "would be needed)")
    if arch.square_attention and config.num_attention_heads * config.head_dim != config.hidden_size:
        what = "output projection is square" if arch.biases == "qkv" else "attention projections are square"
        possessive = name + ("'" if name.endswith("s") else "'s")
        reasons.append(f"num_attention_heads * head_dim = {config.num_attention_heads * config.head_dim} != "
                       f"hidden_size={config.hidden_size} ({possessive} {what})")
    return reasons


def _rope_reasons(config: SmallLLMConfig, architecture: str, full_rotary: bool) -> list[str]:
    reasons = []
    if config.position_embedding_type != "rope":
        reasons.append(f"position_embedding_type={config.position_embedding_type!r} ({architecture} uses RoPE)")
        return reasons
    if full_rotary and config.rotary_dim != config.head_dim:
        reasons.append(f"partial_rotary_factor={config.rope_parameters.get('partial_rotary_factor')} (llama.cpp's "
                       f"{architecture} rotates the whole head)")
    rope_type = config.rope_parameters.get("rope_type", "default")
    if rope_type not in ("default", "linear"):
        reasons.append(f"rope_type={rope_type!r} (this export writes plain and linear RoPE scaling only)")
    if config.norm_type != "rmsnorm":
        reasons.append(f"norm_type={config.norm_type!r} ({architecture} uses RMSNorm)")
    if config.uses_mup or config.mup_scale_qk_dot_by_d:
        reasons.append(f"muP multipliers (mup_base_hidden_size={config.mup_base_hidden_size}; {architecture} has "
                       "no embedding/logit multipliers and scales scores by 1/sqrt(d))")
    return reasons


def architecture_for(config: SmallLLMConfig) -> str:
    """The llama.cpp architecture for `config`: its family's (`Family.gguf`), or for a generic `smallllm` config the
    first of llama, chatglm, jais that can express it. Raises `InexpressibleConfigError` naming every feature that
    stands in the way."""
    record = FAMILIES.get(family_of(config))
    gguf = record.gguf if record is not None else None
    candidates = [gguf.architecture] if gguf is not None else list(GGUF_ARCHITECTURES)
    reasons = []
    for architecture in candidates:
        problems = _reasons(config, GGUF_ARCHITECTURES[architecture])
        if not problems:
            return architecture
        reasons.append(f"{architecture}: " + "; ".join(problems))
    raise InexpressibleConfigError("llama.cpp GGUF", reasons)


# ------------------------------------------------------------------------------------------------------ tensors
def _adjacent_pairs(weight: torch.Tensor, num_heads: int, head_dim: int, rotary_dim: int) -> torch.Tensor:
    """Rows of a q/k projection (or bias) from the "half" rotary layout (pair i, i + r/2) to adjacent pairs (2i, 2i+1)
    within the first `rotary_dim` dims of each head: the layout llama.cpp's NORM rope rotates."""
    shape = weight.shape
    heads = weight.reshape(num_heads, head_dim, *shape[1:])
    rotary = heads[:, :rotary_dim].reshape(num_heads, 2, rotary_dim // 2, *shape[1:]).transpose(1, 2)
    heads = torch.cat([rotary.reshape(num_heads, rotary_dim, *shape[1:]), heads[:, rotary_dim:]], dim=1)
    return heads.reshape(shape)


@dataclass(frozen=True)
class PlannedTensor:
    name: str  # GGUF name
    build: Callable[[], torch.Tensor]  # float32, torch layout [out, in]
    quantizable: bool  # 2-D weight (norms and biases stay f32)
    is_output: bool = False


def plan_tensors(config: SmallLLMConfig, architecture: str, state: dict[str, torch.Tensor]) -> list[PlannedTensor]:
    """Every GGUF tensor of `architecture` and how it is computed from the package state dict `state`."""
    arch = GGUF_ARCHITECTURES[architecture]

    def get(key: str) -> torch.Tensor:
        return state[key].float()

    def has(key: str) -> bool:
        return key in state

    half = config.position_embedding_type == "rope" and config.rope_layout == "half"
    q_heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim

    def rotary(key: str, heads: int) -> Callable[[], torch.Tensor]:
        if not half:
            return lambda: get(key)
        return lambda: _adjacent_pairs(get(key), heads, head_dim, config.rotary_dim)

    tied = not has("lm_head.weight")
    head_key = "model.embed_tokens.weight" if tied else "lm_head.weight"
    embed_scale = config.mup_embeddings_scale if arch.folds_mup else 1.0
    logit_scale = config.output_logits_multiplier if arch.folds_mup else 1.0
    tensors = [PlannedTensor("token_embd.weight", (lambda: get("model.embed_tokens.weight") * embed_scale)
                             if embed_scale != 1.0 else (lambda: get("model.embed_tokens.weight")), True)]
    for i in range(config.num_hidden_layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        attn, mlp = p + "self_attn.", p + "mlp."
        tensors.append(PlannedTensor(b + "attn_norm.weight", lambda k=p + "input_layernorm.weight": get(k), False))
        if has(p + "input_layernorm.bias"):
            tensors.append(PlannedTensor(b + "attn_norm.bias", lambda k=p + "input_layernorm.bias": get(k), False))
        if arch.fused_qkv:
            # 1/d is built in: multiply q by (our scale) * d, which is 1 for muP's 1/d and sqrt(d) for 1/sqrt(d)
            q_scale = config.attention_scaling * head_dim
            for suffix in ("weight", "bias"):
                keys = [f"{attn}{n}_proj.{suffix}" for n in "qkv"]
                tensors.append(PlannedTensor(
                    f"{b}attn_qkv.{suffix}",
                    lambda keys=keys, q_scale=q_scale: torch.cat([get(keys[0]) * q_scale, get(keys[1]), get(keys[2])]),
                    suffix == "weight"))
        else:
            tensors.append(PlannedTensor(b + "attn_q.weight", rotary(attn + "q_proj.weight", q_heads), True))
            tensors.append(PlannedTensor(b + "attn_k.weight", rotary(attn + "k_proj.weight", kv_heads), True))
            tensors.append(PlannedTensor(b + "attn_v.weight", lambda k=attn + "v_proj.weight": get(k), True))
            if has(attn + "q_proj.bias"):
                tensors.append(PlannedTensor(b + "attn_q.bias", rotary(attn + "q_proj.bias", q_heads), False))
                tensors.append(PlannedTensor(b + "attn_k.bias", rotary(attn + "k_proj.bias", kv_heads), False))
                tensors.append(PlannedTensor(b + "attn_v.bias", lambda k=attn + "v_proj.bias": get(k), False))
        tensors.append(PlannedTensor(b + "attn_output.weight", lambda k=attn + "o_proj.weight": get(k), True))
        if has(attn + "o_proj.bias"):
            tensors.append(PlannedTensor(b + "attn_output.bias", lambda k=attn + "o_proj.bias": get(k), False))
        tensors.append(PlannedTensor(b + "ffn_norm.weight",
                                     lambda k=p + "post_attention_layernorm.weight": get(k), False))
        if has(p + "post_attention_layernorm.bias"):
            tensors.append(PlannedTensor(b + "ffn_norm.bias",
                                         lambda k=p + "post_attention_layernorm.bias": get(k), False))
        if arch.fused_gate_up:  # SwiGLU over the halves of one projection: gate first, then up
            tensors.append(PlannedTensor(b + "ffn_up.weight", lambda m=mlp: torch.cat(
                [get(m + "gate_proj.weight"), get(m + "up_proj.weight")]), True))
        else:
            for name in ("gate", "up"):
                key = f"{mlp}{name}_proj."
                tensors.append(PlannedTensor(f"{b}ffn_{name}.weight", lambda k=key + "weight": get(k), True))
                if has(key + "bias"):
                    tensors.append(PlannedTensor(f"{b}ffn_{name}.bias", lambda k=key + "bias": get(k), False))
        tensors.append(PlannedTensor(b + "ffn_down.weight", lambda k=mlp + "down_proj.weight": get(k), True))
        if has(mlp + "down_proj.bias"):
            tensors.append(PlannedTensor(b + "ffn_down.bias", lambda k=mlp + "down_proj.bias": get(k), False))
    tensors.append(PlannedTensor("output_norm.weight", lambda: get("model.norm.weight"), False))
    if has("model.norm.bias"):
        tensors.append(PlannedTensor("output_norm.bias", lambda: get("model.norm.bias"), False))
    # llama/chatglm read a missing `output` as the tied embedding; jais needs its own (and carries the logit scale)
    if not tied or arch.writes_output:
        tensors.append(PlannedTensor("output.weight", (lambda: get(head_key) * logit_scale) if logit_scale != 1.0
                                     else (lambda: get(head_key)), True, is_output=True))
    return tensors


def _tensor_type(planned: PlannedTensor, shape: tuple[int, ...], outtype: str):
    from gguf import GGMLQuantizationType as Q

    if not planned.quantizable or outtype == "f32":
        return Q.F32
    if outtype in ("f16", "bf16"):
        return Q.F16 if outtype == "f16" else Q.BF16
    wanted = Q.Q8_0 if outtype == "q8_0" or planned.is_output else Q.Q4_0
    if shape[-1] % _BLOCK == 0:
        return wanted
    return Q.F16  # a row that is not whole blocks cannot be block-quantized


def _encode(tensor: torch.Tensor, qtype) -> np.ndarray:
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    array = tensor.detach().to(torch.float32).contiguous().numpy()
    if qtype == Q.F32:
        return array
    if qtype == Q.F16:
        return array.astype(np.float16)
    return quants.quantize(array, qtype)


# ------------------------------------------------------------------------------------------------------ metadata
def _write_metadata(writer, config: SmallLLMConfig, architecture: str, outtype: str, name: str,
                    max_alibi_bias: float | None) -> None:
    from gguf import RopeScalingType

    writer.add_name(name)
    writer.add_file_type(_FILE_TYPES[outtype])
    writer.add_quantization_version(2)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    if GGUF_ARCHITECTURES[architecture].positions == "alibi":
        writer.add_layer_norm_eps(config.norm_eps)
        writer.add_max_alibi_bias(max_alibi_bias)
        return
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_rope_dimension_count(config.rotary_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    if config.rope_parameters.get("rope_type", "default") == "linear":
        writer.add_rope_scaling_type(RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(config.rope_parameters["factor"]))


# ------------------------------------------------------------------------------------------------------ export
@dataclass
class GGUFReport:
    """What an export did; `summary()` is what the command line prints."""

    source: str
    output: str
    family: str
    architecture: str
    outtype: str
    tensors: int
    tensor_types: dict[str, int]
    bytes_written: int
    seconds: float
    vocab: str
    check: LogitCheck | None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        types = ", ".join(f"{count} {name}" for name, count in sorted(self.tensor_types.items()))
        lines = [f"package -> GGUF {self.architecture} ({self.family}, {self.outtype}): {self.source} -> {self.output}",
                 f"  {self.tensors} tensors ({types}), {self.bytes_written / 2**20:,.1f} MiB, {self.seconds:.1f} s",
                 f"  tokenizer: {self.vocab}"]
        lines.extend(f"  note: {note}" for note in self.notes)
        lines.append(logit_check_line(self.check))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "check"}
        data.update(logit_check_fields(self.check))
        return data


def _load_tokenizer(source: Path, tokenizer: str | os.PathLike | None):
    from ..tokenization.official import load_tokenizer

    location = Path(tokenizer) if tokenizer is not None else source
    try:
        if location.is_file() and location.suffix == ".gguf":
            check_gguf_file_complete(location, option="tokenizer= (--tokenizer)")
            return load_tokenizer(location.parent, gguf_file=str(location)), location.parent
        return load_tokenizer(location), location
    except InvalidGGUFError:  # already names the file and what is wrong with it
        raise
    except (OSError, ValueError) as err:
        raise UsageFileNotFoundError(f"no tokenizer in {location} ({err}); a GGUF file needs one: pass tokenizer= "
                                "(--tokenizer) with a tokenizer folder or a .gguf vocabulary") from err


def _check_output(output: Path, source: Path, overwrite: bool) -> None:
    if output.suffix != ".gguf":
        raise UsageValueError(f"output={str(output)!r} must be a .gguf file path")
    if output.resolve() == source.resolve() or source.resolve() in output.resolve().parents:
        raise UsageValueError(f"output {output} must not be inside the source checkpoint {source}")
    if output.is_dir():
        raise UsageValueError(f"output {output} is a folder; give a .gguf file path")
    if output.exists() and not overwrite:
        raise UsageFileExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace it")
    check_output_file(output, "output")  # a parent that is a file, or a folder that takes no new file


def check_tolerance(tolerance: float | None, option: str | None = None) -> None:
    """Raise a `UsageValueError` unless `tolerance` (the largest |logit difference| a check allows) is None or a
    finite number >= 0. `option`: the command-line option that gave it, for the message."""
    if tolerance is None:
        return
    try:
        value = float(tolerance)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(tolerance, bool) or not math.isfinite(value) or value < 0:
        named, skip = (f"{option} {tolerance}", "--no-verify") if option else (f"tolerance={tolerance!r}",
                                                                                 "verify=False")
        raise UsageValueError(f"{named}: the largest |logit difference| allowed must be a finite number >= 0 "
                              f"({skip} skips the check)")


def package_to_gguf(
    source: str | os.PathLike, output: str | os.PathLike, *, outtype: str = "f32",
    tokenizer: str | os.PathLike | None = None, verify: bool = True, tolerance: float | None = None,
    verify_length: int = DEFAULT_LENGTH, overwrite: bool = False, progress: bool = True,
) -> GGUFReport:
    """Write the package checkpoint `source` as the GGUF file `output` (see the module docstring).

    `outtype`: one of OUTTYPES. `tokenizer`: a tokenizer folder or `.gguf` vocabulary (default: the checkpoint
    folder). `verify`: read the file back and compare `gguf_reference_logits` with the package model (tolerance per
    outtype, DEFAULT_TOLERANCES). Nothing is left at `output` unless everything succeeded."""
    from gguf import GGUFWriter

    from .checkpoint_files import CheckpointReader
    from .converter import load_package_config
    from .formats import run_package

    started = time.perf_counter()
    source, output = Path(source), Path(output)
    if outtype not in OUTTYPES:
        raise UsageValueError(f"outtype={outtype!r}; choose one of {', '.join(OUTTYPES)}")
    check_tolerance(tolerance)
    _check_output(output, source, overwrite)
    config = load_package_config(source)
    family = family_of(config)
    architecture = architecture_for(config)
    hf_tokenizer, tokenizer_folder = _load_tokenizer(source, tokenizer)
    vocab = gguf_vocab(hf_tokenizer, config.vocab_size, tokenizer_folder)
    notes = list(vocab.notes)
    expected = FAMILIES[family].gguf if family in FAMILIES else None
    if expected is not None and (vocab.model, vocab.pre) != (expected.tokenizer, expected.pre_tokenizer):
        published = expected.tokenizer + (f"/{expected.pre_tokenizer}" if expected.pre_tokenizer else "")
        notes.append(f"{family}'s published tokenizer is {published}; this checkpoint's is "
                     f"{vocab.model + (f'/{vocab.pre}' if vocab.pre else '')}")

    state = CheckpointReader.open(source).load_all()
    max_alibi_bias = None
    if GGUF_ARCHITECTURES[architecture].positions == "alibi":
        from ..models.attention_smallllm import alibi_slopes

        stored = [v for k, v in state.items() if k.endswith("slopes")]
        slopes = stored[0] if stored else alibi_slopes(config.num_attention_heads)
        max_alibi_bias = _alibi_max_bias(slopes, config.num_attention_heads)
        if max_alibi_bias is None:
            raise InexpressibleConfigError("llama.cpp GGUF", [f"jais: ALiBi slopes {slopes.flatten().tolist()[:4]}... "
                                                             "are not llama.cpp's geometric slopes for any max bias"])
        notes.append(f"muP folded: token_embd x {config.mup_embeddings_scale}, output x "
                     f"{config.output_logits_multiplier:.6g}; ALiBi max bias {max_alibi_bias:g}")
    planned = plan_tensors(config, architecture, state)
    # the same plan on meta tensors gives every shape without computing anything: the header precedes the data
    meta = {k: torch.empty(v.shape, dtype=torch.float32, device="meta") for k, v in state.items()}
    shapes = [tuple(t.build().shape) for t in plan_tensors(config, architecture, meta)]

    staging = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.tmp")
    writer = GGUFWriter(None, architecture)
    try:
        try:  # checked before the work above (`_check_output`), but the folder may have changed since
            output.parent.mkdir(parents=True, exist_ok=True)
            staging.touch()
        except OSError as err:
            raise UsageValueError(f"output {output}: cannot write in {output.parent} ({err.strerror or err})"
                                  ) from None
        name = f"{family}-{config.num_hidden_layers}x{config.hidden_size}"
        _write_metadata(writer, config, architecture, outtype, name, max_alibi_bias)
        vocab.write(writer)
        types: dict[str, int] = {}
        encoded_types = []
        for tensor, shape in zip(planned, shapes, strict=True):
            qtype = _tensor_type(tensor, shape, outtype)
            encoded_types.append(qtype)
            types[qtype.name] = types.get(qtype.name, 0) + 1
            nbytes, byte_shape, dtype = _encoded_size(shape, qtype)
            writer.add_tensor_info(tensor.name, byte_shape, dtype, nbytes,
                                   raw_dtype=None if qtype.name in ("F32", "F16") else qtype)
        writer.open_output_file(staging)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        iterator = zip(planned, encoded_types, strict=True)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(list(iterator), desc=f"package -> GGUF {outtype}", unit="tensor")
        for tensor, qtype in iterator:
            writer.write_tensor_data(_encode(tensor.build(), qtype))
        writer.close()
        del state

        check_gguf_file(staging, architecture, [t.name for t in planned])
        check = None
        if verify:
            input_ids = verification_ids(config.vocab_size, config.max_position_embeddings, verify_length)
            weight_dtype = {"f16": torch.float16, "bf16": torch.bfloat16}.get(outtype)
            check = check_logits(lambda ids: run_package(source, config, ids, weight_dtype),
                                 lambda ids: gguf_reference_logits(staging, ids), input_ids,
                                 DEFAULT_TOLERANCES[outtype] if tolerance is None else tolerance,
                                 f"hf_smallllm model vs reference forward of the GGUF ({architecture})")
        os.replace(staging, output)
    finally:
        writer.close()
        if staging.exists():
            staging.unlink()
    return GGUFReport(source=str(source), output=str(output), family=family, architecture=architecture,
                      outtype=outtype, tensors=len(planned), tensor_types=types, bytes_written=output.stat().st_size,
                      seconds=time.perf_counter() - started,
                      vocab=f"{vocab.model}{f' ({vocab.pre})' if vocab.pre else ''}, {len(vocab.tokens):,} entries",
                      check=check, notes=notes)


def _encoded_size(shape: tuple[int, ...], qtype) -> tuple[int, tuple[int, ...], np.dtype]:
    from gguf import GGML_QUANT_SIZES
    from gguf import GGMLQuantizationType as Q

    numel = math.prod(shape)
    if qtype == Q.F32:
        return numel * 4, shape, np.dtype(np.float32)
    if qtype == Q.F16:
        return numel * 2, shape, np.dtype(np.float16)
    block, type_size = GGML_QUANT_SIZES[qtype]
    byte_shape = (*shape[:-1], shape[-1] // block * type_size)
    return math.prod(byte_shape), byte_shape, np.dtype(np.uint8)


# ------------------------------------------------------------------------------------------------------ reading
def check_gguf_file(path: str | os.PathLike, architecture: str, tensor_names: list[str]) -> None:
    """Read a written GGUF back: it must be complete (`check_gguf_file_complete`), and its architecture and tensor
    names the planned ones."""
    try:
        info = check_gguf_file_complete(path)
    except UsageValueError as err:  # this package wrote the file: not the user's mistake
        raise ValueError(f"the GGUF file just written is broken: {err}") from err
    metadata, names = info.metadata, [record.name for record in info.tensors]
    if metadata.get("general.architecture") != architecture:
        raise ValueError(f"{path}: general.architecture is {metadata.get('general.architecture')!r}, expected "
                         f"{architecture!r}")
    if list(names) != list(tensor_names):
        missing = sorted(set(tensor_names) - set(names))
        extra = sorted(set(names) - set(tensor_names))
        raise ValueError(f"{path}: tensors differ from the plan (missing {missing}, unexpected {extra})")


__all__ = [
    "DEFAULT_TOLERANCES", "GGUFReport", "GGUFVocab", "OUTTYPES", "PlannedTensor",
    "architecture_for", "check_gguf_file", "check_tolerance", "package_to_gguf", "plan_tensors",
]
