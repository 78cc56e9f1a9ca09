"""How long training waits for Hub publishing: `HubPublishCallback.on_save` (background) vs publishing inline.

A model of a few tens of MB (TinyLlama-shaped, `--hidden`/`--layers`/`--vocab`) is saved as checkpoints; each is
published to a local Hub-protocol server (`hf_smallllm.testing.hub_server`, 127.0.0.1, in this process) twice:
synchronously with `HubPublisher.publish_snapshot` (the reference: what training would wait for without the
callback's thread) and through `HubPublishCallback.on_save`, timing only the call training makes. Reports the
median seconds of each and the ratio (blocking time of the callback / inline publish; lower is better), plus the
time the background thread needed to finish all snapshots.

    python -m benchmarks.hub_publish                       # 3 snapshots of a ~30 MB model: under a minute
    python -m benchmarks.hub_publish --snapshots 5 --hidden 512

Writes `hub_publish.json` / `.md` to --output-dir (default benchmarks/results).
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--snapshots", type=int, default=3, help="checkpoints to publish each way")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the model")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers")
    parser.add_argument("--vocab", type=int, default=16000, help="vocabulary size")
    parser.add_argument("--output-dir", default="benchmarks/results", help="where the JSON and Markdown go")
    args = parser.parse_args(argv)

    import huggingface_hub.constants as constants
    import torch

    from hf_smallllm.families import FAMILIES, preset_config
    from hf_smallllm.hub import HubPublishCallback, HubPublisher
    from hf_smallllm.testing.hub_server import DEFAULT_TOKEN, start_in_thread

    constants.HF_HUB_OFFLINE = False  # only the local server below is addressed
    work = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    server = start_in_thread(work / "hub")
    config = preset_config("tinyllama", "tiny", hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3,
                           num_hidden_layers=args.layers, vocab_size=args.vocab)
    runs = {"inline": work / "inline", "callback": work / "callback"}
    model = FAMILIES["tinyllama"].causal_lm_class(config)
    for run in runs.values():
        for step in range(1, args.snapshots + 1):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.01)
            folder = run / f"checkpoint-{step}"
            model.save_pretrained(folder)
            (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "num_input_tokens_seen": step}))
    size_mb = (runs["inline"] / "checkpoint-1" / "model.safetensors").stat().st_size / 2**20

    publisher = HubPublisher("bench/inline", endpoint=server.url, token=DEFAULT_TOKEN)
    inline = []
    for step in range(1, args.snapshots + 1):
        start = time.perf_counter()
        publisher.publish_snapshot(runs["inline"] / f"checkpoint-{step}")
        inline.append(time.perf_counter() - start)

    callback = HubPublishCallback("bench/callback", endpoint=server.url, token=DEFAULT_TOKEN, final=False,
                                  output_dir=runs["callback"], log=lambda line: None)

    class State:
        is_world_process_zero = True

    blocking = []
    start_all = time.perf_counter()
    for step in range(1, args.snapshots + 1):
        state = State()
        state.global_step = step
        start = time.perf_counter()
        callback.on_save(None, state, None)
        blocking.append(time.perf_counter() - start)
    callback.wait()
    background_total = time.perf_counter() - start_all
    server.shutdown()
    if callback.failures:
        raise SystemExit(f"background publishing failed: {callback.failures}")

    result = {"model_mb": round(size_mb, 1), "snapshots": args.snapshots,
              "inline_publish_s_median": statistics.median(inline),
              "callback_on_save_s_median": statistics.median(blocking),
              "ratio_callback_over_inline": statistics.median(blocking) / statistics.median(inline),
              "background_total_s": background_total}
    table = ("| model MB | snapshots | inline publish s (median) | on_save blocks s (median) | ratio "
             "| background total s |\n"
             "|---|---|---|---|---|---|\n"
             f"| {result['model_mb']} | {args.snapshots} | {result['inline_publish_s_median']:.3f} | "
             f"{result['callback_on_save_s_median']:.4f} | {result['ratio_callback_over_inline']:.4f} | "
             f"{background_total:.2f} |\n")
    print(table)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "hub_publish.json").write_text(json.dumps(result, indent=2) + "\n")
    (output / "hub_publish.md").write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
