"""Loading a checkpoint for inference and generating with streamed output.

`load_for_inference` applies the CPU options users expect (bf16, q/k/v and gate/up fused into one matrix each,
oneDNN-packed fp32 linears for decode bandwidth, torch.ao dynamic int8, bitsandbytes 8/4-bit) and `stream_generate`
prints text as it is produced and returns timing statistics (prefill and decode tokens/s).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import TextStreamer

from ..errors import UsageFileNotFoundError, UsageValueError

QUANTIZATION_CHOICES = ("none", "int8", "int4", "bnb-8bit", "bnb-4bit")
DTYPE_CHOICES = ("float32", "bfloat16", "float16")


@dataclass
class InferenceOptions:
    """How to load a model for inference."""

    dtype: str = "float32"
    quantization: str = "none"  # one of QUANTIZATION_CHOICES
    # oneDNN-packed linears: True packs, False keeps nn.Linear, None packs fp32 CPU models (without quantization or
    # compilation) only where a timed one-token forward says packing is faster on this machine
    pack_linears: bool | None = None
    compile: bool = False  # compile the decode step (static cache) with torch.compile
    # q/k/v and gate/up as one matrix each (fused_projections.py): None fuses on CPU unless compiled
    fuse_projections: bool | None = None
    # one-pass RMSNorm and a rotary table (lean_decode.py): None swaps them in on CPU unless compiled
    lean_decoding: bool | None = None
    attn_implementation: str = "sdpa"
    device: str = "cpu"
    revision: str | None = None

    def __post_init__(self):
        if self.quantization not in QUANTIZATION_CHOICES:
            raise ValueError(f"quantization={self.quantization!r}; choose one of {', '.join(QUANTIZATION_CHOICES)}")
        if self.dtype not in DTYPE_CHOICES:
            raise ValueError(f"dtype={self.dtype!r}; choose one of {', '.join(DTYPE_CHOICES)}")


def load_for_inference(model_path, options: InferenceOptions | None = None, tokenizer_path=None):
    """(model, tokenizer) ready for generation. Raises FileNotFoundError if no tokenizer can be found."""
    from transformers import AutoTokenizer

    from . import streaming_load
    from .cpu_linear import LinearsChoice, can_pack_linears, pack_linears, pack_linears_if_faster
    from .freed_memory import release_freed_memory
    from .fused_projections import fuse_projections
    from .lean_decode import prepare_lean_decoding
    from .loading import load_config, load_model
    from .quantization import load_bnb_quantized, quantize_int8_dynamic
    from .weight_only import quantize_int4_weight_only

    options = options or InferenceOptions()
    dtype = getattr(torch, options.dtype)
    hub_kwargs = {"revision": options.revision} if options.revision else {}
    packable = (options.device == "cpu" and dtype in (torch.float32, torch.bfloat16)
                and options.quantization == "none")
    if options.pack_linears and not (packable and can_pack_linears()):
        raise UsageValueError("packed linears need float32 or bfloat16 weights on a CPU with oneDNN and no "
                              "quantization; got "
                         f"dtype={options.dtype}, device={options.device}, quantization={options.quantization}")
    # the config first: a broken or invalid config.json would otherwise surface as "no tokenizer found" (the
    # tokenizer loader reads config.json to pick a class)
    load_config(model_path, revision=options.revision)
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or model_path, **hub_kwargs)
    except (OSError, ValueError) as err:
        raise UsageFileNotFoundError(
            f"no tokenizer found in {tokenizer_path or model_path}; pass --tokenizer PATH ({err.__class__.__name__})"
        ) from err

    fuse = options.fuse_projections
    if fuse is None:
        fuse = options.device == "cpu" and not options.compile and not options.quantization.startswith("bnb-")
    if fuse and options.compile:
        raise UsageValueError("fused projections keep Python state between calls and cannot be compiled; drop one")
    if options.quantization == "int4" and options.device != "cpu":
        raise UsageValueError("int4 weight-only layers use torch's CPU kernels (--device cpu)")
    model = None
    if options.quantization == "int4" and not options.revision:
        # block by block from safetensors, never the whole model in bf16; None where that does not apply
        model = streaming_load.load_int4_streaming(model_path, dtype=dtype, fuse=fuse, progress=True,
                                                   attn_implementation=options.attn_implementation)
    if model is None:
        if options.quantization.startswith("bnb-"):
            bits = 8 if options.quantization == "bnb-8bit" else 4
            model = load_bnb_quantized(model_path, bits, device=options.device, compute_dtype=dtype,
                                       attn_implementation=options.attn_implementation, **hub_kwargs)
        else:
            model = load_model(model_path, dtype=options.dtype, device=options.device,
                               attn_implementation=options.attn_implementation, revision=options.revision)
        if fuse:
            fuse_projections(model)
        if options.quantization == "int8":
            if options.device != "cpu" or dtype != torch.float32:
                raise ValueError("int8 dynamic quantization runs on CPU with float32 activations (--dtype float32)")
            model = quantize_int8_dynamic(model)
        if options.quantization == "int4":
            quantize_int4_weight_only(model)
    model.eval()
    if options.pack_linears:
        choice = LinearsChoice(pack_linears(model) > 0, reason="as asked")
    elif options.pack_linears is False:
        choice = LinearsChoice(False, reason="as asked")
    elif packable and not options.compile:
        choice = pack_linears_if_faster(model)
    else:  # quantized, not float32, not on CPU, or compiled: packing does not apply
        choice = None
    model.cpu_linears_choice = choice  # what `hf-smallllm generate` reports
    lean = options.lean_decoding
    if lean is None:
        lean = options.device == "cpu" and not options.compile
    if lean:
        prepare_lean_decoding(model)
    if options.compile:
        enable_compiled_decoding(model)
    release_freed_memory()
    return model, tokenizer


def enable_compiled_decoding(model) -> None:
    """Make `generate` use a static KV cache and a torch.compile'd forward, on any device. transformers compiles
    automatically only on accelerators; its `CompileConfig` has a private switch for the others."""
    from transformers import CompileConfig

    compile_config = CompileConfig(dynamic=False, mode="default")  # "reduce-overhead" means CUDA graphs
    compile_config._compile_all_devices = True
    model.generation_config.cache_implementation = "static"
    model.generation_config.compile_config = compile_config


class _CallbackStreamer(TextStreamer):
    """A TextStreamer that hands finished text pieces to a callback and records when the first token arrived."""

    def __init__(self, tokenizer, on_text: Callable[[str], None]):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text = on_text
        self.first_token_time = None
        self.prompt_seen = False

    def put(self, value):
        if self.prompt_seen and self.first_token_time is None:
            self.first_token_time = time.perf_counter()
        self.prompt_seen = True
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False):
        self.on_text(text)


@dataclass
class GenerationStats:
    text: str
    prompt_tokens: int
    new_tokens: int
    prefill_seconds: float
    decode_seconds: float
    extra: dict = field(default_factory=dict)

    @property
    def decode_tokens_per_second(self) -> float:
        return (self.new_tokens - 1) / self.decode_seconds if self.new_tokens > 1 and self.decode_seconds > 0 else 0.0


def stream_generate(model, tokenizer, prompt: str, *, max_new_tokens: int = 64, temperature: float = 0.0,
                    top_p: float = 1.0, top_k: int = 0, repetition_penalty: float = 1.0, chat: bool = False,
                    on_text: Callable[[str], None] = lambda s: print(s, end="", flush=True)) -> GenerationStats:
    """Generate from `prompt`, streaming text pieces to `on_text`. Temperature 0 is greedy decoding. With `chat`, the
    prompt is wrapped as one user turn with the tokenizer's chat template."""
    if max_new_tokens < 1:
        raise UsageValueError(f"max_new_tokens={max_new_tokens} must be at least 1")
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise UsageValueError("this tokenizer has no chat template; drop --chat or use a fine-tuned model")
        input_ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                  return_tensors="pt", return_dict=True)["input_ids"]
    else:
        input_ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    if input_ids.shape[1] == 0:
        raise ValueError("the prompt encodes to no tokens")
    input_ids = input_ids.to(model.device)
    streamer = _CallbackStreamer(tokenizer, on_text)
    sampling = {"do_sample": temperature > 0}
    if temperature > 0:
        sampling.update(temperature=temperature, top_p=top_p, top_k=top_k)
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    compiled = getattr(model.generation_config, "cache_implementation", None) == "static"
    if temperature == 0 and repetition_penalty == 1.0 and not compiled:  # the lean loop: no per-token bookkeeping
        return _stream_greedy(model, tokenizer, input_ids, max_new_tokens, streamer)
    start = time.perf_counter()
    with torch.no_grad():
        output = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                                repetition_penalty=repetition_penalty, streamer=streamer, pad_token_id=pad_token_id,
                                **sampling)
    end = time.perf_counter()
    new_tokens = output.shape[1] - input_ids.shape[1]
    first = streamer.first_token_time or end
    return GenerationStats(
        text=tokenizer.decode(output[0, input_ids.shape[1]:], skip_special_tokens=True),
        prompt_tokens=input_ids.shape[1],
        new_tokens=new_tokens,
        prefill_seconds=first - start,
        decode_seconds=end - first,
    )


def _stream_greedy(model, tokenizer, input_ids, max_new_tokens: int, streamer) -> GenerationStats:
    """Greedy decoding through `lean_decode.greedy_decode` (the same tokens as `generate(do_sample=False)`),
    streamed and timed like `generate()`."""
    from .lean_decode import greedy_decode

    streamer.put(input_ids.cpu())  # the prompt, which the streamer skips
    result = greedy_decode(model, input_ids, max_new_tokens, eos_token_id=model.generation_config.eos_token_id,
                           on_token=lambda token: streamer.put(torch.tensor([token])))
    streamer.end()
    return GenerationStats(
        text=tokenizer.decode(result.tokens, skip_special_tokens=True),
        prompt_tokens=input_ids.shape[1],
        new_tokens=result.tokens.numel(),
        prefill_seconds=result.prefill_seconds,
        decode_seconds=result.decode_seconds,
    )


__all__ = ["DTYPE_CHOICES", "GenerationStats", "InferenceOptions", "QUANTIZATION_CHOICES", "enable_compiled_decoding",
           "load_for_inference", "stream_generate"]
