"""`hf-smallllm bench`: the model benchmark suite (same as `python -m benchmarks.run`)."""

COMMAND = "bench"
HELP = "benchmark the model classes against transformers' own (prefill, decode, training, memory, CPU options)"
DESCRIPTION = (
    "Runs our classes and their transformers twins (same weights) interleaved in one process and prints ratios: "
    "prefill and decode tokens/s, forward+backward tokens/s on packed rows, peak memory, decode speed against "
    "the memory-bandwidth ceiling, CPU inference options (bf16, oneDNN-packed linears, int8, bitsandbytes) with "
    "perplexity on held-out text, and BTLM-3B's 4-bit footprint. Results go to JSON and Markdown."
)


def register(parser):
    from ..bench.runner import build_parser

    build_parser(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..bench.runner import run as run_suite

    return run_suite(args)
