"""Training tokens/s on CPU: block-diagonal packing vs plain causal packing vs transformers' Llama with
DataCollatorWithFlattening (see hf_smallllm/bench/train_throughput.py). Writes JSON and Markdown."""

import argparse
import json
import sys
from pathlib import Path

import torch

from hf_smallllm.bench.measure import machine_description
from hf_smallllm.bench.train_throughput import ThroughputSettings, format_markdown, measure_training_throughput


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_throughput", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rows", type=int, default=4, help="packed rows per step")
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per row")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds (the median is kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--output-dir", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure_training_throughput(ThroughputSettings(rows=args.rows, seq_len=args.seq_len,
                                                            repeats=args.repeats))
    machine = machine_description()
    markdown = format_markdown(result, machine)
    print(markdown)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_throughput.json").write_text(json.dumps({"machine": machine, **result}, indent=2))
    (out / "train_throughput.md").write_text(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
