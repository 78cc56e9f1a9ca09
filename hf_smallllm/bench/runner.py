"""`hf-smallllm bench` / `python -m benchmarks.run`: the model benchmark suite, written as JSON and Markdown. The
options are declared in hf_smallllm_cli/bench.py (parsing them needs no torch); `run(args)` does the work."""

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..errors import UsageValueError
from ..families import FAMILIES
from ..runfiles import write_text_atomic

SIZES = ("tiny", "small", "published")  # tiny: a seconds-long smoke run of the suite itself


def run(args) -> int:
    from .footprint import quantized_footprint
    from .gpu import gpu_rows
    from .measure import machine_description, read_bandwidth_bytes_per_second, read_bandwidths
    from .suite import SuiteSettings, format_markdown, measure_pair

    if args.threads:
        torch.set_num_threads(args.threads)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise UsageValueError(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    sizes = [s.strip() for s in (args.sizes or ("small" if args.quick else "small,published")).split(",")]
    if any(s not in SIZES for s in sizes):
        raise UsageValueError(f"--sizes must be among {SIZES}, got {sizes}")
    if args.repeats is not None and args.repeats < 1:
        raise UsageValueError(f"--repeats must be at least 1, got {args.repeats}")
    overrides = {"repeats": args.repeats} if args.repeats else {}
    settings = (SuiteSettings.quick if args.quick else SuiteSettings)(families=tuple(families), sizes=tuple(sizes),
                                                                       **overrides)
    machine = machine_description()
    started = time.perf_counter()
    kernels = read_bandwidths()
    bandwidth = max(kernels.values())
    machine["read_bandwidth_GBps"] = round(bandwidth / 1e9, 2)
    machine["read_bandwidth_by_kernel_GBps"] = {name: round(rate / 1e9, 2) for name, rate in kernels.items()}
    print(f"{machine['cpu']}: {machine['threads']} threads, read bandwidth {bandwidth / 1e9:.1f} GB/s ("
          + ", ".join(f"{name} {rate / 1e9:.1f}" for name, rate in kernels.items()) + ")", flush=True)

    rows = []
    for size in sizes:
        for family in families:
            print(f"measuring {family} ({size}) ...", flush=True)
            # the ceiling is re-measured next to each model's decode rows: a shared VM's bandwidth drifts
            pair_rows = measure_pair(family, size, settings, read_bandwidth_bytes_per_second)
            rows.extend(pair_rows)
            for row in pair_rows:
                ratio = "-" if row.ratio is None else f"{row.ratio:.3f}"
                print(f"  {row.metric}: ours {row.ours or '-'} reference {row.reference or '-'} ratio {ratio} "
                      f"{row.verdict} {row.note}".rstrip(), flush=True)
    if not args.skip_options:
        from .inference_options import inference_option_rows

        print("CPU inference options (trains a small byte-level model first) ...", flush=True)
        rows.extend(inference_option_rows(steps=150 if args.quick else 400))
    footprint = None
    if not args.skip_footprint:
        footprint = quantized_footprint("btlm", 4)
        print(f"BTLM-3B with bitsandbytes 4-bit weights: {footprint['bytes'] / 1e9:.2f} GB "
              f"(float32 {footprint['float32_bytes'] / 1e9:.1f} GB)", flush=True)
    if not args.skip_gpu:
        if torch.cuda.is_available():
            print(f"GPU rows on {torch.cuda.get_device_name(0)} (training MFU, bf16 decode, flash-attn ALiBi) ...",
                  flush=True)
        rows.extend(gpu_rows())  # "not measured" rows without CUDA

    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = f"models-{'quick' if args.quick else 'full'}"
    result = {"machine": machine, "settings": {k: str(v) for k, v in vars(settings).items()},
              "seconds": round(time.perf_counter() - started, 1), "rows": [r.to_dict() for r in rows],
              "bnb_4bit_btlm_footprint": footprint, "created": stamp}
    markdown = format_markdown(rows, machine, settings.repeats)
    if footprint:
        markdown += (f"\nBTLM-3B-8K with bitsandbytes NF4 weights (double quantization, bf16 embeddings): "
                     f"{footprint['bytes'] / 1e9:.2f} GB, computed from a quantized published-size layer's state "
                     f"dict x {preset_layers('btlm')} layers (float32: {footprint['float32_bytes'] / 1e9:.1f} GB; "
                     f"BTLM's card: about 3 GB).\n")
    for suffix, text in ((".json", json.dumps(result, indent=2)), (".md", markdown)):
        path = output / f"{name}{suffix}"
        write_text_atomic(path, text)
    print(markdown)
    print(f"wrote {output / (name + '.json')} and {output / (name + '.md')} in {result['seconds']:.0f} s")
    return 0


def preset_layers(family: str) -> int:
    from ..families import preset_config

    return preset_config(family).num_hidden_layers
