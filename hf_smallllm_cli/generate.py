"""`hf-smallllm generate`: try a model from the shell, with streamed output."""

import argparse
import sys
from pathlib import Path

from ._checks import NON_NEGATIVE_FLOAT, NON_NEGATIVE_INT, POSITIVE_FLOAT, PROBABILITY

COMMAND = "generate"
HELP = "generate text from a checkpoint (local folder or Hub repo) with streamed output"
DESCRIPTION = (
    "Load an hf_smallllm checkpoint and stream generated text to stdout; timings go to stderr. On CPU in float32 "
    "the linear layers are packed for oneDNN where a timed one-token forward shows it is faster on this machine "
    "(about 2x faster decoding on AMD EPYC, slower on Intel Xeon; --linears forces either); --quantize picks int8 "
    "(torch dynamic), int4 (weight-only, torch's CPU kernels; with --dtype bfloat16) or bitsandbytes 8/4-bit "
    "weights. --backend llama.cpp runs the model in llama.cpp instead "
    "(needs llama-cpp-python): a GGUF file as it is, or a checkpoint folder exported first to the GGUF type "
    "--quantize/--dtype name (int8 -> q8_0, int4 and bnb-4bit -> q4_0, float32 -> f32)."
)


PACK_CHOICES = {"auto": None, "packed": True, "plain": False}
# = hf_smallllm.inference.generation's DTYPE_CHOICES and QUANTIZATION_CHOICES (a test compares them)
DTYPE_CHOICES = ("float32", "bfloat16", "float16")
QUANTIZATION_CHOICES = ("none", "int8", "int4", "bnb-8bit", "bnb-4bit")


def register(parser):
    parser.add_argument("model", help="checkpoint folder or Hub repo id")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="prompt text")
    source.add_argument("--prompt-file", help="read the prompt from this file ('-' for stdin)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate")  # the library checks it
    parser.add_argument("--temperature", type=NON_NEGATIVE_FLOAT, default=0.0, help="sampling temperature; 0 = greedy")
    parser.add_argument("--top-p", type=PROBABILITY, default=1.0,
                        help="nucleus sampling threshold in (0, 1] (with --temperature)")
    parser.add_argument("--top-k", type=NON_NEGATIVE_INT, default=0,
                        help="top-k sampling (0 = off; with --temperature)")
    parser.add_argument("--repetition-penalty", type=POSITIVE_FLOAT, default=1.0, help="penalty for repeated tokens")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt with the tokenizer's chat template")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32", help="weights and compute dtype")
    parser.add_argument("--quantize", choices=QUANTIZATION_CHOICES, default="none", help="weight quantization")
    parser.add_argument("--linears", choices=("auto", "packed", "plain"), default="auto",
                        help="CPU float32 linear layers: oneDNN-packed, plain nn.Linear, or whichever a timed "
                             "one-token forward finds faster")
    parser.add_argument("--no-pack", action="store_true", help=argparse.SUPPRESS)  # before --linears: = plain
    parser.add_argument("--compile", action="store_true", help="torch.compile the decode step with a static cache")
    parser.add_argument("--backend", choices=("torch", "llama.cpp"), default="torch",
                        help="run with PyTorch (this package's classes) or llama.cpp (through a GGUF export)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit (e.g. a snapshot branch)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder, if not stored with the model")
    parser.add_argument("--seed", type=int, default=0, help="random seed for sampling")
    parser.set_defaults(func=run)


def run(args) -> int:
    import torch

    from hf_smallllm.errors import UsageFileNotFoundError, UsageValueError
    from hf_smallllm.inference.generation import InferenceOptions, load_for_inference, stream_generate
    from hf_smallllm.inference.loading import check_device

    if args.prompt_file == "-":
        prompt = sys.stdin.read()
    elif args.prompt_file:
        if not Path(args.prompt_file).is_file():
            raise UsageFileNotFoundError(f"--prompt-file: no such file {args.prompt_file!r}")
        prompt = Path(args.prompt_file).read_text(encoding="utf-8")
    else:
        prompt = args.prompt
    if not prompt:
        raise UsageValueError("the prompt is empty")
    if args.backend == "llama.cpp":
        return _run_llama_cpp(args, prompt)
    check_device(args.device)
    options = InferenceOptions(dtype=args.dtype, quantization=args.quantize,
                               pack_linears=PACK_CHOICES["plain" if args.no_pack else args.linears],
                               compile=args.compile,
                               device=args.device, revision=args.revision)
    torch.manual_seed(args.seed)
    model, tokenizer = load_for_inference(args.model, options, tokenizer_path=args.tokenizer)
    choice = getattr(model, "cpu_linears_choice", None)
    if choice is not None:
        print(f"[{choice.describe()}]", file=sys.stderr)
    sys.stdout.write(prompt if not args.chat else "")
    stats = stream_generate(model, tokenizer, prompt, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            repetition_penalty=args.repetition_penalty, chat=args.chat)
    sys.stdout.write("\n")
    print(f"[{stats.prompt_tokens} prompt tokens, {stats.new_tokens} new; first token after "
          f"{stats.prefill_seconds:.2f} s; decode {stats.decode_tokens_per_second:.1f} tokens/s]", file=sys.stderr)
    return 0


def _run_llama_cpp(args, prompt: str) -> int:
    from hf_smallllm.errors import UsageValueError
    from hf_smallllm.inference.llama_cpp import llama_cpp_stream_generate

    unsupported = [flag for flag, used in (("--compile", args.compile), ("--device", args.device != "cpu"),
                                           ("--revision", args.revision), ("--linears", args.linears != "auto"))
                   if used]
    if unsupported:
        verb = "applies" if len(unsupported) == 1 else "apply"
        raise UsageValueError(f"{', '.join(unsupported)} {verb} only to the torch backend, not --backend llama.cpp")
    stats = llama_cpp_stream_generate(args.model, prompt, tokenizer_path=args.tokenizer, quantization=args.quantize,
                                      dtype=args.dtype, max_new_tokens=args.max_new_tokens,
                                      temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                      repetition_penalty=args.repetition_penalty, chat=args.chat, seed=args.seed,
                                      on_ready=lambda: sys.stdout.write(prompt if not args.chat else ""))
    sys.stdout.write("\n")
    print(f"[llama.cpp, GGUF {stats.extra['gguf_type']}: {stats.prompt_tokens} prompt tokens, {stats.new_tokens} "
          f"new; first token after {stats.prefill_seconds:.2f} s; decode {stats.decode_tokens_per_second:.1f} "
          "tokens/s]", file=sys.stderr)
    return 0
