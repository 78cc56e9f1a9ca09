"""`hf-smallllm bench`: the model benchmark suite (same as `python -m benchmarks.run`); the work is done by
`hf_smallllm.bench.runner.run`."""

import argparse

from ._options import FAMILY_NAMES

COMMAND = "bench"
HELP = "benchmark the model classes against transformers' own (prefill, decode, training, memory, CPU options)"
DESCRIPTION = (
    "Runs our classes and their transformers twins (same weights) interleaved in one process and prints ratios: "
    "prefill and decode tokens/s, forward+backward tokens/s on packed rows, peak memory, decode speed against "
    "the memory-bandwidth ceiling, CPU inference options (bf16, oneDNN-packed linears, int8, bitsandbytes) with "
    "perplexity on held-out text, and BTLM-3B's 4-bit footprint. Results go to JSON and Markdown."
)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The suite's options, on `parser` or on a new parser (prog `python -m benchmarks.run`)."""
    parser = parser or argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="short prompts, few decode steps, small models only (~7 minutes on 2 CPU cores)")
    parser.add_argument("--families", default=",".join(FAMILY_NAMES), help="comma-separated families to measure")
    parser.add_argument("--sizes", default=None,
                        help="comma-separated sizes among tiny,small,published (default: small with --quick, else "
                             "small,published)")
    parser.add_argument("--skip-options", action="store_true",
                        help="skip the CPU inference options table (trains a small model first, ~3 minutes)")
    parser.add_argument("--skip-gpu", action="store_true",
                        help="skip the CUDA rows (training MFU, bf16 decode, flash-attn ALiBi varlen)")
    parser.add_argument("--skip-footprint", action="store_true", help="skip the bitsandbytes 4-bit BTLM-3B footprint")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="paired measuring rounds per row (default: 16); odd rounds run the reference first")
    parser.add_argument("--output-dir", default="benchmarks/results", help="where the JSON and Markdown go")
    return parser


def register(parser):
    build_parser(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from hf_smallllm.bench.runner import run as run_suite

    return run_suite(args)
