"""Pretraining data throughput: prepared token shards against the on-the-fly stream, preparation speed, and the
memory of a reading process.

1. Delivery: per-process delivered tokens/s of rank 0 at simulated world sizes 1, 8, 64 and 512 with the same
   global batch (8,192 rows of 2,048 tokens = 16.8M tokens per step: Skywork-13B's batch, trained on 512 GPUs; 4
   rows per micro-batch, so accumulation = 2,048 / world size), for prepared shards and the on-the-fly stream, on the
   `tiny-tinyllama` mixture (five sources, two phases with a ramp) over the bundled corpus. Only rank 0 runs (the
   other ranks' work is independent). Rates are tokens per CPU-second of the reading process (one thread), which is
   what one core delivers and is not distorted by other programs on a shared machine; wall-clock rates are kept in
   the JSON. Both are timed over whole steps. Prepared shards are timed in paired rounds (12; 4 with --quick): each
   round times every world size from the same step, the rounds' steps spread over the whole schedule (both mixture
   phases and the ramp), and the ratio to N=1 is the median per-round ratio with its 95% interval (the model suite's
   method), checked against the issue's target (>= 0.9x at N=512). The on-the-fly stream must tokenize every row of
   a step to find its own, whatever the world size, so its per-process rate is the tokenizer's rate / N for any
   global batch; to keep the run short it is timed over one step of a smaller global batch (512 rows, 1 row per
   micro-batch: 1M tokens).
2. Preparation: tokens/s of `prepare_sources` on three copies of the bundled corpus (3 x 4.4 MB, five sources; one
   copy with --quick, where start-up and the last unit's tail weigh more) with the Llama-2
   SentencePiece vocabulary (32,000) and DeepSeek-LLM's byte-level BPE (102,400 + 3), both rebuilt from llama.cpp's
   GGUF vocabulary files in tests/fixtures/tokenizers (47/47 on llama.cpp's reference tokenizations), with 1 and 2
   worker processes: wall-clock tokens/s, tokens per CPU-second (workers plus the reading main process), and the
   2-worker speed-up (target >= 1.7x).
3. Memory: peak RSS of a fresh process that reads one whole epoch of the prepared corpus, for the bundled corpus and
   for a corpus 10 times its size (every file listed ten times), Llama-2 vocabulary.

    python -m benchmarks.data_throughput            # about 3 minutes on 2 cores
    python -m benchmarks.data_throughput --quick    # a smaller global batch, shorter timings (seconds)

Writes data_throughput.json and data_throughput.md to --output-dir. The load average of the machine at the start
and the end is recorded: on a shared machine wall-clock numbers (the 2-worker speed-up above all) mean little.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIXTURES = Path(__file__).parents[1] / "tests" / "fixtures" / "tokenizers"
VOCABULARIES = {"llama-2 (32,000)": "ggml-vocab-llama-spm.gguf",
                "deepseek-llm (102,403)": "ggml-vocab-deepseek-llm.gguf"}
WORLD_SIZES = (1, 8, 64, 512)
ROWS_PER_MICRO_BATCH = 4
ON_THE_FLY_ROWS_PER_STEP = 512
TARGET_VS_N1 = 0.9  # issue 19: a process of 512 gets at least 0.9x the tokens/s of a process alone
TARGET_SPEEDUP = 1.7  # issue 19: two preparation workers at least 1.7x one


def load_vocabulary(name: str):
    from hf_smallllm.tokenization.official import load_gguf_tokenizer

    return load_gguf_tokenizer(FIXTURES / VOCABULARIES[name])


def recipe_sources(repeat: int = 1) -> list[dict]:
    from hf_smallllm.train.recipe import load_recipe

    sources = load_recipe("tiny-tinyllama").data.sources
    return [{**spec, "paths": list(spec["paths"]) * repeat} for spec in sources]


def make_stream(tokenizer, folder, world_size: int, rows_per_step: int, seq_len: int, steps: int,
                rows_per_micro_batch: int = ROWS_PER_MICRO_BATCH):
    """Rank 0 of `world_size` on the tiny-tinyllama mixture."""
    from hf_smallllm.data import (
        DocumentSource,
        MixtureSchedule,
        OnTheFlyTokens,
        PackedBatchStream,
        SequenceLengthSchedule,
        open_prepared,
        read_manifest,
        tokenizer_identity,
    )
    from hf_smallllm.train.recipe import load_recipe

    recipe = load_recipe("tiny-tinyllama")
    specs = recipe_sources()
    if folder is not None:
        identity, manifest = tokenizer_identity(tokenizer), read_manifest(folder)
        sources = {s["name"]: open_prepared(folder, s["name"], identity, False, s, manifest) for s in specs}
    else:
        sources = {s["name"]: OnTheFlyTokens(DocumentSource.from_dict(s), tokenizer) for s in specs}
    mixture = MixtureSchedule(recipe.mixture_phases, steps, sources=list(sources))
    lengths = SequenceLengthSchedule([{"until": 1.0, "seq_len": seq_len}], steps, rows_per_step * seq_len)
    accumulation = rows_per_step // (rows_per_micro_batch * world_size)
    return PackedBatchStream(sources, mixture, lengths, steps, accumulation, world_size, 0, 0, packing="document",
                             eos_token_id=tokenizer.eos_token_id)


def time_delivery(stream, min_seconds: float, whole_steps: bool) -> dict:
    per_step = stream.accumulation
    tokens = micro = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in stream:
        tokens += batch["input_ids"].numel()
        micro += 1
        done = time.process_time() - cpu >= min_seconds
        if done and (not whole_steps or micro % per_step == 0):
            break
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"tokens": tokens, "micro_batches": micro, "steps": micro / per_step, "cpu_s": round(cpu, 3),
            "wall_s": round(wall, 3), "tokens_per_cpu_s": tokens / cpu, "tokens_per_wall_s": tokens / wall}


def delivery(tokenizer, folder, rows_per_step, seq_len, seconds, rounds: int) -> list[dict]:
    """Prepared shards: `rounds` paired rounds; in each, every world size (order alternating) is timed for `seconds /
    rounds` CPU-seconds of whole steps from the same step, the rounds' steps spread over the schedule (both mixture
    phases, the ramp included). The ratio to N=1 is the median per-round ratio with its 95% interval."""
    import statistics

    from hf_smallllm.bench.suite import median_confidence_interval

    steps = 10_000
    streams = {n: make_stream(tokenizer, folder, n, rows_per_step, seq_len, steps=steps) for n in WORLD_SIZES}
    for stream in streams.values():
        next(iter(stream))  # open the shard files before timing
    results = {n: [] for n in WORLD_SIZES}
    for number in range(rounds):
        order = WORLD_SIZES if number % 2 == 0 else WORLD_SIZES[::-1]
        for n in order:
            streams[n].seek(number * steps // rounds)
            results[n].append(time_delivery(streams[n], seconds / rounds, whole_steps=True))
    rows = []
    for n in WORLD_SIZES:
        rates = [r["tokens_per_cpu_s"] for r in results[n]]
        ratios = [rate / one["tokens_per_cpu_s"] for rate, one in zip(rates, results[1], strict=True)]
        interval = median_confidence_interval(ratios)
        total = {key: sum(r[key] for r in results[n]) for key in ("tokens", "micro_batches", "cpu_s", "wall_s")}
        rows.append({"kind": "prepared", "world_size": n, "accumulation": streams[n].accumulation,
                     "tokens_per_step": streams[n].lengths.tokens_per_step, "rounds": rounds,
                     "tokens_per_cpu_s": statistics.median(rates), "round_tokens_per_cpu_s": rates,
                     "tokens_per_wall_s": total["tokens"] / total["wall_s"], **total,
                     "vs_world_size_1": statistics.median(ratios), "round_ratios": ratios,
                     "vs_world_size_1_interval": interval})
        print(f"delivery prepared  N={n:<4} {rows[-1]['tokens_per_cpu_s'] / 1e6:8.2f}M tokens/CPU-s, "
              f"{rows[-1]['vs_world_size_1']:.3f}x N=1 (95% interval {interval})", flush=True)
    for n in WORLD_SIZES:
        # one step of a smaller global batch: whatever the world size, every process tokenizes all of it
        stream = make_stream(tokenizer, None, n, ON_THE_FLY_ROWS_PER_STEP, seq_len, steps=steps, rows_per_micro_batch=1)
        result = time_delivery(stream, 0.0, whole_steps=True)
        base = rows[len(WORLD_SIZES)]["tokens_per_cpu_s"] if n > 1 else result["tokens_per_cpu_s"]
        rows.append({"kind": "on-the-fly", "world_size": n, "accumulation": stream.accumulation,
                     "tokens_per_step": stream.lengths.tokens_per_step,
                     "vs_world_size_1": result["tokens_per_cpu_s"] / base, **result})
        print(f"delivery on-the-fly N={n:<4} {result['tokens_per_cpu_s'] / 1e6:8.3f}M tokens/CPU-s "
              f"({result['tokens']:,d} tokens, {result['cpu_s']:.1f} CPU-s)", flush=True)
    return rows


def preparation(vocabularies, workers_list, shard_chars, scratch: Path, repeat: int) -> list[dict]:
    from hf_smallllm.data.prepare import prepare_sources

    rows = []
    for name in vocabularies:
        tokenizer = load_vocabulary(name)
        for workers in workers_list:
            folder = scratch / f"prep-{len(rows)}"
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall, cpu = time.perf_counter(), time.process_time()
            manifest = prepare_sources(recipe_sources(repeat), tokenizer, folder, workers=workers,
                                       shard_chars=shard_chars,
                                       progress=False)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu += (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
            tokens = sum(entry["tokens"] for entry in manifest["sources"].values())
            rows.append({"vocabulary": name, "workers": workers, "corpus_copies": repeat, "tokens": tokens,
                         "wall_s": round(wall, 2),
                         "cpu_s": round(cpu, 2), "tokens_per_wall_s": tokens / wall, "tokens_per_cpu_s": tokens / cpu,
                         "dtype": manifest["dtype"], "folder": str(folder)})
            print(f"prepare {name:<24} workers={workers} {tokens:,d} tokens {tokens / wall / 1e6:.2f}M tokens/s "
                  f"wall, {tokens / cpu / 1e6:.2f}M per CPU-s", flush=True)
    for row in rows:
        one = next(r for r in rows if r["vocabulary"] == row["vocabulary"] and r["workers"] == workers_list[0])
        row["speedup_vs_1_worker"] = row["tokens_per_wall_s"] / one["tokens_per_wall_s"]
    return rows


_READER = """
import os, resource, sys, numpy as np
from hf_smallllm.data import PreparedTokens, read_manifest
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * page
folder = sys.argv[1]
manifest = read_manifest(folder)
tokens, before = 0, rss()
highest = before
out = np.empty((4, 2048), np.int64)
for name in manifest["sources"]:
    source = PreparedTokens(folder, name, manifest)
    for start in range(0, source.total_tokens, out.size):
        for row in range(4):
            source.read_into(out[row], start + row * 2048)
        tokens += out.size
        highest = max(highest, rss())
print(tokens, before, highest, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def reader_memory(folder: Path) -> dict:
    """A fresh process reads every token of the folder once (4 rows of 2,048 at a time): its resident memory after
    the imports, the highest while reading (sampled after every 4 rows), and the peak of the process."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    output = subprocess.run([sys.executable, "-c", _READER, str(folder)], capture_output=True, text=True, env=env,
                            check=True).stdout.split()
    corpus = sum(p.stat().st_size for p in folder.rglob("*.tokens"))
    tokens, before, highest, peak = (int(value) for value in output)
    return {"tokens_read": tokens, "shard_bytes": corpus, "rss_before_reading_mb": before / 2**20,
            "rss_highest_reading_mb": highest / 2**20, "growth_while_reading_mb": (highest - before) / 2**20,
            "peak_rss_mb": peak / 2**20}


def _target_verdict(value: float, interval, target: float) -> str:
    """'met' (median at or above the target), 'tie' (below, but the 95% interval reaches it), or 'missed'."""
    if value >= target:
        return "met"
    return "tie" if interval and interval[1] >= target else "missed"


def write_results(output: Path, result: dict) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "data_throughput.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    meta = result["meta"]
    setting = (f"{meta['machine']}, {meta['cpu_count']} cores, Python {meta['python']}; load average "
               f"{meta['load_start']} at the start, {meta['load_end']} at the end (other programs shared the cores). "
               f"Global batch {meta['rows_per_step']:,d} rows x {meta['seq_len']:,d} tokens, 4 rows per micro-batch; "
               "rates are tokens per CPU-second of rank 0 (one thread), the median of "
               f"{result['delivery'][0].get('rounds', 1)} paired rounds spread over the schedule. The on-the-fly "
               "column uses a 512-row global batch (1 row per micro-batch; its rate is the tokenizer's / N for any "
               "batch).")
    lines = ["# Data throughput", "", setting, "",
             "## Delivered tokens per second per process (rank 0 timed)", "",
             "| world size | accumulation | prepared shards | vs N=1 (95% interval) | target >= 0.90x | on-the-fly "
             "| vs N=1 |",
             "|---|---|---|---|---|---|---|"]
    by = {(r["kind"], r["world_size"]): r for r in result["delivery"]}
    for n in WORLD_SIZES:
        p, f = by[("prepared", n)], by[("on-the-fly", n)]
        interval = p.get("vs_world_size_1_interval")
        shown = f"{p['vs_world_size_1']:.3f}x" + (f" ({interval[0]:.3f}-{interval[1]:.3f})" if interval else "")
        lines.append(f"| {n} | {p['accumulation']} | {p['tokens_per_cpu_s'] / 1e6:.2f}M | {shown} | "
                     f"{_target_verdict(p['vs_world_size_1'], interval, TARGET_VS_N1)} | "
                     f"{f['tokens_per_cpu_s'] / 1e6:.3f}M | {f['vs_world_size_1']:.3f}x |")
    copies = result["preparation"][0].get("corpus_copies", 1)
    corpus = f"{copies} copies of the bundled corpus" if copies > 1 else "the bundled corpus"
    lines += ["", f"## Preparation (`prepare_sources`, {corpus})", "",
              "| vocabulary | dtype | workers | tokens | tokens/s (wall) | tokens per CPU-second | speed-up | "
              "target >= 1.7x |",
              "|---|---|---|---|---|---|---|---|"]
    for r in result["preparation"]:
        verdict = "" if r["workers"] == 1 else "met" if r["speedup_vs_1_worker"] >= TARGET_SPEEDUP else "missed"
        lines.append(f"| {r['vocabulary']} | {r['dtype']} | {r['workers']} | {r['tokens']:,d} | "
                     f"{r['tokens_per_wall_s'] / 1e6:.2f}M | {r['tokens_per_cpu_s'] / 1e6:.2f}M | "
                     f"{r['speedup_vs_1_worker']:.2f}x | {verdict} |")
    memory = result["memory"]
    lines += ["", "## Resident memory of a process reading one whole epoch", "",
              "| corpus | shard bytes | tokens read | RSS after imports | highest while reading | growth | peak RSS |",
              "|---|---|---|---|---|---|---|"]
    for label, row in memory.items():
        lines.append(f"| {label} | {row['shard_bytes'] / 1e6:.1f} MB | {row['tokens_read']:,d} | "
                     f"{row['rss_before_reading_mb']:.0f} MB | {row['rss_highest_reading_mb']:.0f} MB | "
                     f"{row['growth_while_reading_mb']:.1f} MB | {row['peak_rss_mb']:.0f} MB |")
    (output / "data_throughput.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="256 rows per step, short timings, one vocabulary")
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="CPU seconds per world size for prepared shards, over all rounds")
    parser.add_argument("--output-dir", default="benchmarks/results")
    parser.add_argument("--memory-only", action="store_true",
                        help="measure only the reading memory; keep the other results of the existing JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rows_per_step, seq_len = (8192, 2048) if not args.quick else (2048, 128)
    seconds = args.seconds if not args.quick else 0.5
    meta = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "load_start": [round(x, 1) for x in os.getloadavg()],
            "rows_per_step": rows_per_step, "seq_len": seq_len, "quick": args.quick}
    vocabularies = list(VOCABULARIES)[:1] if args.quick else list(VOCABULARIES)
    repeat = 10 if not args.quick else 3
    with tempfile.TemporaryDirectory(prefix="data-throughput-") as scratch:
        scratch = Path(scratch)
        from hf_smallllm.data.prepare import prepare_sources

        llama = load_vocabulary(vocabularies[0])
        folder = scratch / "bundled"
        if args.memory_only:
            previous = json.loads((Path(args.output_dir) / "data_throughput.json").read_text(encoding="utf-8"))
            rows, prepared = previous["delivery"], previous["preparation"]
            meta = {**previous["meta"], "memory_load_start": meta["load_start"]}
            prepare_sources(recipe_sources(), llama, folder, workers=2, progress=False)
        else:
            prepared = preparation(vocabularies, (1, 2), 250_000, scratch, 1 if args.quick else 3)
            prepare_sources(recipe_sources(), llama, folder, workers=2, progress=False)
            rows = delivery(llama, folder, rows_per_step, seq_len, seconds, 4 if args.quick else 12)
        tenfold = scratch / "tenfold"
        prepare_sources(recipe_sources(repeat), llama, tenfold, workers=2, progress=False)
        memory = {"bundled (1x)": reader_memory(folder), f"{repeat}x": reader_memory(tenfold)}
        for label, row in memory.items():
            print(f"reader {label}: {row['tokens_read']:,d} tokens, RSS +{row['growth_while_reading_mb']:.1f} MB "
                  f"while reading, peak {row['peak_rss_mb']:.0f} MB", flush=True)
        for row in prepared:
            row.pop("folder", None)
    meta["memory_load_end" if args.memory_only else "load_end"] = [round(x, 1) for x in os.getloadavg()]
    write_results(Path(args.output_dir), {"meta": meta, "delivery": rows, "preparation": prepared, "memory": memory})
    print((Path(args.output_dir) / "data_throughput.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
