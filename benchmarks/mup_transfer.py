"""muP hyperparameter transfer: does the learning rate tuned on a narrow proxy stay the best one at 8x the width?

For each parametrization (muP as BTLM trains: base width = the proxy width, BTLM's multipliers, muP init and
per-group learning rates; SP: same widths, data and base init std, no multipliers, one global lr; see
`hf_smallllm.train.coord_check`) the same learning-rate grid is swept at the proxy width (64) and the target width
(512): every run trains the same byte-level Shakespeare windows with AdamW (BTLM's betas/eps), linear warmup then
linear decay, and is scored by its loss on held-out Shakespeare (`validation/en_shakespeare.txt`). The proxy's best
lr is then looked up in the target's sweep: under muP it should rank among the best two, under SP it should not
(SP's optimum moves to smaller learning rates as the width grows).

    python -m benchmarks.mup_transfer                 # ~10-15 minutes on 2 CPU cores
    python -m benchmarks.mup_transfer --quick         # seconds; a smoke run, numbers not meaningful

Writes `mup_transfer.json` and `mup_transfer.md` (the table for docs/mup.md) to --output-dir; prints the rank of the
transferred lr and its loss relative to the best loss of the target sweep (the reference, measured in this process).
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hf_smallllm.train.coord_check import (
    PARAMETRIZATIONS,
    build_model,
    byte_windows,
    evaluate_loss,
    train_steps,
    width_config,
)


def warmup_linear_decay(total_steps: int, warmup_fraction: float = 0.1, final_fraction: float = 0.1):
    """lr multiplier: linear warmup from 0 over `warmup_fraction` of the run, then linear decay to
    `final_fraction` (BTLM's schedule shape: warmup, then one linear decay)."""
    warmup = max(1, round(total_steps * warmup_fraction))

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 1.0 - (1.0 - final_fraction) * min(1.0, progress)

    return lr_lambda


def lr_sweep(
    parametrization: str,
    width: int,
    lrs: list[float],
    *,
    base_width: int,
    steps: int,
    batch_size: int,
    seq_len: int,
    eval_batches: int,
    seed: int = 0,
    num_layers: int = 2,
    progress=None,
) -> list[dict]:
    """Validation loss after `steps` steps for each lr in `lrs` (inf for a run that diverged)."""
    train = byte_windows(steps, batch_size, seq_len, seed=seed)
    validation = byte_windows(eval_batches, batch_size, seq_len, seed=10_000 + seed,
                              text="validation/en_shakespeare.txt")
    config = width_config(width, parametrization, base_width=base_width, num_layers=num_layers,
                          max_position_embeddings=max(seq_len, 8))
    rows = []
    for lr in lrs:
        model = build_model(config, seed)
        started = time.perf_counter()
        run = train_steps(model, train, lr, lr_lambda=warmup_linear_decay(steps))
        loss = math.inf if run["diverged"] else evaluate_loss(model, validation)
        if not math.isfinite(loss):
            loss = math.inf
        rows.append({"parametrization": parametrization, "width": width, "lr": lr, "val_loss": loss,
                     "diverged": not math.isfinite(loss),
                     "final_train_loss": run["losses"][-1], "seconds": round(time.perf_counter() - started, 2)})
        if progress is not None:
            progress.update(1)
    return rows


def rank_of(rows: list[dict], lr: float) -> int:
    """1-based rank of `lr` in a sweep, by validation loss (lower is better)."""
    ordered = sorted(rows, key=lambda row: row["val_loss"])
    return 1 + next(i for i, row in enumerate(ordered) if row["lr"] == lr)


def summarize(sweeps: dict[str, dict[str, list[dict]]], proxy_width: int, target_width: int) -> dict[str, dict]:
    """Per parametrization: the proxy's best lr, the target's best lr, the proxy lr's rank at the target and its
    loss relative to the target's best loss."""
    summary = {}
    for parametrization, by_width in sweeps.items():
        proxy, target = by_width[str(proxy_width)], by_width[str(target_width)]
        proxy_best = min(proxy, key=lambda row: row["val_loss"])
        target_best = min(target, key=lambda row: row["val_loss"])
        transferred = next(row for row in target if row["lr"] == proxy_best["lr"])
        rank = rank_of(target, proxy_best["lr"])
        summary[parametrization] = {
            "proxy_best_lr": proxy_best["lr"],
            "target_best_lr": target_best["lr"],
            "transferred_rank": rank,
            "transfers": rank <= 2,
            "loss_ratio_vs_best": transferred["val_loss"] / target_best["val_loss"],
        }
    return summary


def format_lr(lr: float) -> str:
    exponent = math.log2(lr)
    return f"2^{exponent:.0f} ({lr:.2g})" if exponent == round(exponent) else f"{lr:.3g}"


def to_markdown(result: dict) -> str:
    settings, sweeps, summary = result["settings"], result["sweeps"], result["summary"]
    proxy, target = settings["proxy_width"], settings["target_width"]
    columns = [(p, w) for p in sweeps for w in (proxy, target)]
    lines = [
        f"Validation loss (bytes, nats) after {settings['steps']} AdamW steps of {settings['batch_size']}x"
        f"{settings['seq_len']} bytes, {settings['num_layers']} layers; **bold** = best of the column, "
        f"* = the proxy's best lr.\n",
        "| lr | " + " | ".join(f"{p} width {w}" for p, w in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for index, lr in enumerate(settings["lrs"]):
        cells = []
        for parametrization, width in columns:
            rows = sweeps[parametrization][str(width)]
            loss = rows[index]["val_loss"]
            text = "diverged" if not math.isfinite(loss) else f"{loss:.3f}"
            if loss == min(row["val_loss"] for row in rows):
                text = f"**{text}**"
            if lr == summary[parametrization]["proxy_best_lr"]:
                text += " *"
            cells.append(text)
        lines.append(f"| {format_lr(lr)} | " + " | ".join(cells) + " |")
    lines += ["", "| parametrization | proxy best lr | best lr at width "
              f"{target} | rank of proxy lr at width {target} | loss / best loss | transfers |", "|---" * 6 + "|"]
    for parametrization, row in summary.items():
        lines.append(f"| {parametrization} | {format_lr(row['proxy_best_lr'])} | {format_lr(row['target_best_lr'])} | "
                     f"{row['transferred_rank']} of {len(settings['lrs'])} | {row['loss_ratio_vs_best']:.3f} | "
                     f"{'yes' if row['transfers'] else 'no'} |")
    return "\n".join(lines) + "\n"


def json_safe(value):
    """`value` with non-finite floats (diverged runs) as null, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


def write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def run_benchmark(
    lrs: list[float],
    *,
    proxy_width: int = 64,
    target_width: int = 512,
    steps: int = 100,
    batch_size: int = 8,
    seq_len: int = 128,
    eval_batches: int = 8,
    num_layers: int = 2,
    seed: int = 0,
    parametrizations=PARAMETRIZATIONS,
    progress: bool = True,
) -> dict:
    """Both sweeps for both parametrizations; returns {"settings", "sweeps", "summary", "seconds"}."""
    if target_width <= proxy_width:
        raise ValueError(f"target_width={target_width} must be larger than proxy_width={proxy_width}.")
    if len(lrs) < 3:
        raise ValueError(f"lrs={lrs}: a transfer test needs at least three learning rates.")
    settings = dict(lrs=sorted(lrs), proxy_width=proxy_width, target_width=target_width, steps=steps,
                    batch_size=batch_size, seq_len=seq_len, eval_batches=eval_batches, num_layers=num_layers,
                    seed=seed, torch_threads=torch.get_num_threads())
    started = time.perf_counter()
    sweeps: dict[str, dict[str, list[dict]]] = {}  # parametrization -> str(width) -> one row per lr
    with tqdm(total=len(parametrizations) * 2 * len(lrs), desc="lr sweeps", disable=not progress) as bar:
        for parametrization in parametrizations:
            sweeps[parametrization] = {
                str(width): lr_sweep(parametrization, width, settings["lrs"], base_width=proxy_width, steps=steps,
                                batch_size=batch_size, seq_len=seq_len, eval_batches=eval_batches, seed=seed,
                                num_layers=num_layers, progress=bar)
                for width in (proxy_width, target_width)
            }
    return {"settings": settings, "sweeps": sweeps, "summary": summarize(sweeps, proxy_width, target_width),
            "seconds": round(time.perf_counter() - started, 1)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mup_transfer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lr-exponents", default="-12,-11,-10,-9,-8,-7,-6,-5,-4",
                        help="comma-separated base-2 exponents of the lr grid (default: %(default)s)")
    parser.add_argument("--proxy-width", type=int, default=64, help="proxy (and muP base) width (default: 64)")
    parser.add_argument("--target-width", type=int, default=512, help="width the lr is transferred to (default: 512)")
    parser.add_argument("--steps", type=int, default=100, help="training steps per run (default: 100)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per step (default: 8)")
    parser.add_argument("--seq-len", type=int, default=128, help="bytes per sequence (default: 128)")
    parser.add_argument("--eval-batches", type=int, default=8, help="held-out batches scored per run (default: 8)")
    parser.add_argument("--num-layers", type=int, default=2, help="decoder blocks (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="init and data seed (default: 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: widths 32 -> 64, three lrs, 5 steps (seconds; numbers not meaningful)")
    parser.add_argument("--output-dir", default="benchmarks/results",
                        help="where mup_transfer.json and mup_transfer.md go (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        exponents = [float(x) for x in args.lr_exponents.split(",") if x.strip()]
    except ValueError:
        print(f"error: --lr-exponents={args.lr_exponents!r} must be comma-separated numbers", file=sys.stderr)
        return 2
    options = dict(proxy_width=args.proxy_width, target_width=args.target_width, steps=args.steps,
                   batch_size=args.batch_size, seq_len=args.seq_len, eval_batches=args.eval_batches,
                   num_layers=args.num_layers, seed=args.seed)
    if args.quick:
        exponents = [-9.0, -7.0, -5.0]
        options.update(proxy_width=32, target_width=64, steps=5, batch_size=4, seq_len=32, eval_batches=2)
    try:
        result = run_benchmark([2.0 ** e for e in exponents], **options)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(result)
    write_atomically(output / "mup_transfer.json", json.dumps(json_safe(result), indent=2) + "\n")
    write_atomically(output / "mup_transfer.md", markdown)
    print(markdown)
    for parametrization, row in result["summary"].items():
        print(f"{parametrization}: proxy lr {row['proxy_best_lr']:.3g} ranks {row['transferred_rank']} at width "
              f"{options['target_width']}, loss ratio vs best {row['loss_ratio_vs_best']:.3f} "
              f"({'transfers' if row['transfers'] else 'does not transfer'})")
    print(f"{result['seconds']} s; wrote {output / 'mup_transfer.md'} and {output / 'mup_transfer.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
