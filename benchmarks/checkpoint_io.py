"""Seconds per GB to save and to load a pretraining checkpoint of the TinyLlama-1.1B shape, through the engine's
`Checkpointer`: one process (consolidated safetensors + the optimizer state in DCP format) against 2 FSDP2 processes
on gloo (the same folder: the full weights gathered to rank 0 for the safetensors file, each rank writing its own
optimizer shard; loading broadcasts the weights from rank 0 and reads each rank's shard).

The model is fp32 with AdamW's two moments initialised (what a checkpoint of a real run holds): 1.1B parameters x
12 bytes = 13.2 GB on disk. The reference is the 1-process save/load measured in the same run; the 2-process figures
are printed as ratios against it. Each measurement runs in its own process(es), so memory is freed between them.
It needs about 18 GB of memory and 30 GB of free disk under --work-dir.

    python -m benchmarks.checkpoint_io                      # TinyLlama-1.1B shape: about 5 minutes on 2 cores
    python -m benchmarks.checkpoint_io --layers 2           # a quick look (2 of the 22 layers)

Writes `checkpoint_io.json` / `.md` to --output-dir (default benchmarks/results).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def worker(work: str, layers: int, mode: str, result: str) -> None:
    """Build the model, shard it when running under torchrun, save a checkpoint, time it; then load it back (a fresh
    model and optimizer), time that; rank 0 writes the timings to `result`."""
    import torch
    from accelerate import Accelerator
    from transformers.trainer_callback import TrainerState

    from hf_smallllm.families import FAMILIES, preset_config
    from hf_smallllm.train.checkpointer import Checkpointer
    from hf_smallllm.train.fsdp import apply_fsdp2
    from hf_smallllm.train.parallel import ParallelPlan

    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    world = accelerator.num_processes
    sharded = world > 1
    plan = ParallelPlan(world_size=world, ranks_per_node=world, nodes=1, parallelism="fsdp2" if sharded else "single",
                        sharded_by="hf_smallllm" if sharded else None, launcher="torchrun" if sharded else "python",
                        micro_batch_rows=[1], seq_lens=[2048], gradient_accumulation_steps=1,
                        tokens_per_step=2048 * world, device="cpu")

    def build():
        config = preset_config("tinyllama", "published", num_hidden_layers=layers)
        model = FAMILIES["tinyllama"].causal_lm_class(config)
        if sharded:
            apply_fsdp2(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for param in model.parameters():  # the moments a real run has (zeros are as large as any values)
            optimizer.state[param] = {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(param),
                                      "exp_avg_sq": torch.zeros_like(param)}
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        return model, optimizer, scheduler

    model, optimizer, scheduler = build()
    output = Path(work) / mode
    checkpointer = Checkpointer(accelerator, plan, output, model, model, optimizer, scheduler)
    state = TrainerState(global_step=1, max_steps=2)
    accelerator.wait_for_everyone()
    start = time.perf_counter()
    folder = checkpointer.save(state, {"step": 1}, {"loss_sum": 0.0, "last_logged_step": 1})
    save_seconds = time.perf_counter() - start
    del model, optimizer, scheduler, checkpointer
    model, optimizer, scheduler = build()
    checkpointer = Checkpointer(accelerator, plan, output, model, model, optimizer, scheduler)
    if accelerator.is_main_process:  # drop the page cache's advantage where possible (root only)
        subprocess.run(["sh", "-c", "sync; echo 1 > /proc/sys/vm/drop_caches"], capture_output=True)
    accelerator.wait_for_everyone()
    start = time.perf_counter()
    checkpointer.load(folder)
    load_seconds = time.perf_counter() - start
    if accelerator.is_main_process:
        Path(result).write_text(json.dumps({"save_seconds": save_seconds, "load_seconds": load_seconds,
                                            "bytes": _folder_bytes(folder), "processes": world}))
    accelerator.wait_for_everyone()


def run(mode: str, work: Path, layers: int, processes: int) -> dict:
    result = work / f"{mode}.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // processes))}
    if processes == 1:
        command = [sys.executable, "-m", "benchmarks.checkpoint_io", "--worker", str(work), str(layers), mode,
                   str(result)]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                   "-m", "benchmarks.checkpoint_io", "--worker", str(work), str(layers), mode, str(result)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    shutil.rmtree(work / mode, ignore_errors=True)
    return json.loads(result.read_text())


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--layers", type=int, default=22, help="decoder layers (TinyLlama-1.1B has 22)")
    parser.add_argument("--work-dir", default=None, help="where the checkpoints are written (default: a temp dir)")
    parser.add_argument("--output-dir", default="benchmarks/results", help="where the JSON and Markdown go")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ckpt-bench-", dir=args.work_dir))
    try:
        results = {"single": run("single", work, args.layers, 1), "sharded": run("sharded", work, args.layers, 2)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for mode, r in results.items():
        gigabytes = r["bytes"] / 1e9
        r["save_seconds_per_gb"] = r["save_seconds"] / gigabytes
        r["load_seconds_per_gb"] = r["load_seconds"] / gigabytes
        rows.append(f"| {mode} ({r['processes']} process{'es' if r['processes'] > 1 else ''}) | {gigabytes:.2f} | "
                    f"{r['save_seconds']:.1f} | {r['save_seconds_per_gb']:.2f} | {r['load_seconds']:.1f} | "
                    f"{r['load_seconds_per_gb']:.2f} |")
    single, sharded = results["single"], results["sharded"]
    ratios = {"save": sharded["save_seconds_per_gb"] / single["save_seconds_per_gb"],
              "load": sharded["load_seconds_per_gb"] / single["load_seconds_per_gb"]}
    from hf_smallllm.bench.measure import machine_description

    report = {"layers": args.layers, "results": results, "ratios_sharded_over_single": ratios,
              "machine": machine_description()}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoint_io.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = "\n".join([
        f"# Checkpoint save/load, TinyLlama-1.1B shape ({args.layers} layers), fp32 weights + AdamW moments", "",
        "| run | GB on disk | save s | save s/GB | load s | load s/GB |", "|---|---|---|---|---|---|", *rows, "",
        f"2 sharded processes / 1 process, seconds per GB: save {ratios['save']:.2f}x, load {ratios['load']:.2f}x "
        "(lower is faster)", ""])
    (out / "checkpoint_io.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
