"""Peak memory and tokens/s of one training forward+backward at long lengths on CPU, per memory strategy.

Each (setting, length) runs in a fresh subprocess so that the process's peak resident set (`ru_maxrss`) belongs to
that one step: the reported peak is the growth of the peak RSS from just before the step (model, optimizer-free
weights and inputs already allocated) to its end. Workers run with `MALLOC_MMAP_THRESHOLD_=1048576` (unless set), so
buffers of 1 MiB and more come from mmap and freed memory leaves the RSS instead of fragmenting the heap. The model is
a small one with a real 32K vocabulary (hidden 128, 2 layers, 4 heads, so that 64K tokens fit a 2-core CPU in
minutes); settings:

- `rope-sdpa-lean`: RoPE (TinyLlama-shaped), sdpa with its causal fast path (no mask tensor), chunked cross-entropy
  (`loss_chunk_size` 1024), activation checkpointing: this package's long-context training setup;
- `alibi-sdpa-lean`: the same for ALiBi (BTLM-shaped): blockwise ALiBi attention from the slopes (no [q, kv] bias);
- `rope-sdpa-plain`: the reference, measured in this process: sdpa, full [tokens, vocab] logits, no checkpointing;
- `rope-eager`: eager attention, which materialises [heads, q, kv] scores: the quadratic reference, skipped where
  its estimated peak exceeds --max-gib.

    python -m benchmarks.long_context_memory                  # 4K, 16K, 64K: ~15-30 minutes on 2 CPU cores
    python -m benchmarks.long_context_memory --quick          # 1K, 2K, 4K: a minute
    python -m benchmarks.long_context_memory --lengths 4096,16384 --settings rope-sdpa-lean,rope-sdpa-plain

Prints a Markdown table (peak MiB, tokens/s, and peak growth per 4x length: ~4 is linear, ~16 quadratic) and writes
`long_context_memory.json` / `.md` to --output-dir.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {
    "rope-sdpa-lean": {"family": "tinyllama", "attn": "sdpa", "loss_chunk_size": 1024, "checkpointing": True},
    "alibi-sdpa-lean": {"family": "btlm", "attn": "sdpa", "loss_chunk_size": 1024, "checkpointing": True},
    "rope-sdpa-plain": {"family": "tinyllama", "attn": "sdpa", "loss_chunk_size": None, "checkpointing": False},
    "rope-eager": {"family": "tinyllama", "attn": "eager", "loss_chunk_size": None, "checkpointing": False},
}
MODEL = {"vocab_size": 32000, "hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 4}


def estimated_gib(setting: dict, length: int) -> float:
    """Rough peak of the settings that hold quadratic or [tokens, vocab] tensors, to skip hopeless runs."""
    gib = 0.0
    if setting["attn"] == "eager":  # scores, probabilities, their gradients, per layer kept for backward
        gib += 3 * MODEL["num_hidden_layers"] * MODEL["num_attention_heads"] * length * length * 4 / 2**30
    if setting["loss_chunk_size"] is None:  # logits, fp32 copy, softmax grad
        gib += 3 * length * MODEL["vocab_size"] * 4 / 2**30
    return gib


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def worker(name: str, length: int) -> dict:
    """One forward+backward of `name` at `length` tokens in this (fresh) process."""
    import torch

    from hf_smallllm import FAMILIES, preset_config

    setting = SETTINGS[name]
    torch.manual_seed(0)
    overrides = {**MODEL, "max_position_embeddings": length, "loss_chunk_size": setting["loss_chunk_size"]}
    if setting["family"] == "btlm":  # keep BTLM's muP shape at this width
        overrides.update(mup_base_hidden_size=64.0, mup_base_intermediate_size=172.0)
    config = preset_config(setting["family"], "tiny", attn_implementation=setting["attn"], **overrides)
    model = FAMILIES[setting["family"]].causal_lm_class(config).train()
    if setting["checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ids = torch.randint(3, MODEL["vocab_size"], (1, length))
    before = _maxrss_mib()
    start = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    seconds = time.perf_counter() - start
    return {"setting": name, "length": length, "peak_mib": _maxrss_mib() - before, "seconds": seconds,
            "tokens_per_s": length / seconds, "loss": float(loss)}


def run(lengths: list[int], settings: list[str], max_gib: float, timeout: float) -> list[dict]:
    results = []
    for name in settings:
        for length in lengths:
            estimate = estimated_gib(SETTINGS[name], length)
            if estimate > max_gib:
                results.append({"setting": name, "length": length, "skipped": f"needs ~{estimate:.0f} GiB"})
                print(f"{name:16s} {length:>7d}  skipped (needs ~{estimate:.0f} GiB > --max-gib {max_gib:g})")
                continue
            command = [sys.executable, "-m", "benchmarks.long_context_memory", "--worker", name, str(length)]
            try:
                # Large buffers straight from mmap, so that peak RSS counts tensors rather than glibc heap
                # fragmentation (blockwise ALiBi frees and reallocates key-gradient slices of growing sizes).
                env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", "1048576")}
                done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True, env=env)
                result = json.loads(done.stdout.strip().splitlines()[-1])
            except subprocess.TimeoutExpired:
                result = {"setting": name, "length": length, "skipped": f"over {timeout:g} s"}
            except subprocess.CalledProcessError as err:
                result = {"setting": name, "length": length, "skipped": f"failed: {err.stderr.strip()[-300:]}"}
            results.append(result)
            measured = ("skipped" not in result
                        and f"peak {result['peak_mib']:9.1f} MiB  {result['tokens_per_s']:8.1f} tok/s")
            print(f"{name:16s} {length:>7d}  " + (measured or result["skipped"]), flush=True)
    return results


def markdown(results: list[dict], lengths: list[int]) -> str:
    lines = ["| setting | " + " | ".join(f"{n // 1024}K peak MiB | {n // 1024}K tok/s" for n in lengths)
             + " | peak growth per 4x length |",
             "|---|" + "---:|---:|" * len(lengths) + "---:|"]
    for name in dict.fromkeys(r["setting"] for r in results):
        by_length = {r["length"]: r for r in results if r["setting"] == name}
        cells = []
        for n in lengths:
            r = by_length.get(n, {})
            cells += ([f"{r['peak_mib']:.0f}", f"{r['tokens_per_s']:.0f}"] if "peak_mib" in r
                      else [r.get("skipped", "-"), "-"])
        growth = []
        for a, b in zip(lengths, lengths[1:], strict=False):
            ra, rb = by_length.get(a, {}), by_length.get(b, {})
            if "peak_mib" in ra and "peak_mib" in rb and ra["peak_mib"] > 0:
                # normalised to a 4x length step: 4 = linear, 16 = quadratic
                ratio = (rb["peak_mib"] / ra["peak_mib"]) ** (__import__("math").log(4) / __import__("math").log(b / a))
                growth.append(f"{ratio:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {', '.join(growth) or '-'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--lengths", default="4096,16384,65536", help="comma-separated row lengths in tokens")
    parser.add_argument("--quick", action="store_true", help="lengths 1024,2048,4096 (a smoke run)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, from {', '.join(SETTINGS)}")
    parser.add_argument("--max-gib", type=float, default=12.0, help="skip runs whose estimated peak exceeds this")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run before it is abandoned")
    parser.add_argument("--output-dir", default="benchmarks/results", help="where the JSON and Markdown go")
    parser.add_argument("--worker", nargs=2, metavar=("SETTING", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]))))
        return 0
    lengths = [1024, 2048, 4096] if args.quick else [int(x) for x in args.lengths.split(",")]
    settings = [s.strip() for s in args.settings.split(",")]
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown settings {sorted(unknown)}; choose from {', '.join(SETTINGS)}")
    results = run(lengths, settings, args.max_gib, args.timeout)
    table = markdown(results, lengths)
    print("\n" + table)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    stem = "long_context_memory-quick" if args.quick else "long_context_memory"
    for suffix, text in ((".json", json.dumps({"model": MODEL, "results": results}, indent=2)), (".md", table + "\n")):
        tmp = output / f".{stem}{suffix}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, output / f"{stem}{suffix}")
    print(f"wrote {output / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
