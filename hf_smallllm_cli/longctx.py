"""`hf-smallllm longctx`: long-context evaluation, passkey retrieval and loss-by-position curves.

Thin argparse fronts over `hf_smallllm.longctx`; each subcommand prints a Markdown table and writes JSON and a PNG
atomically. The same model folder may be given twice under different names with different `--set` config
overrides, e.g. to compare an ALiBi model with and without `alibi_scaling` or a RoPE model under rope scalings.
"""

import argparse

COMMAND = "longctx"
HELP = ("long-context evaluation (passkey, needle in a haystack, loss by position) and the memory plan of "
        "long-context training")
DESCRIPTION = """Long-context evaluation of saved models (any folder AutoModelForCausalLM loads). `passkey` hides a
number at several depths of filler text of exact token lengths and checks that greedy generation repeats it;
`position-loss` plots the next-token loss against position on bundled held-out text, past the training length;
`needle` scores needle-in-a-haystack retrieval over length x depth (heat map); `memory-plan` prints the memory per
GPU of long-context training stages.
Config fields can be overridden at load time with --set, e.g. --set 'alibi_scaling={type: linear, train_seq_len:
2048}' or --set 'rope_parameters={rope_type: dynamic, factor: 4.0, rope_theta: 10000.0}'. See docs/long_context.md."""


def register(parser):
    parser.set_defaults(func=lambda args: parser.print_help() or 0)
    subparsers = parser.add_subparsers(dest="longctx_command", metavar="SUBCOMMAND")
    formatter = argparse.ArgumentDefaultsHelpFormatter

    passkey = subparsers.add_parser("passkey", formatter_class=formatter,
                                    help="passkey retrieval accuracy per context length and depth",
                                    description="Passkey retrieval (Mohtashami & Jaggi 2023): accuracy per "
                                                "(context length, depth); Markdown table, JSON and a heatmap PNG.")
    _model_options(passkey)
    passkey.add_argument("--lengths", type=_int_list, default=[1024, 2048, 4096],
                         help="comma-separated prompt lengths in tokens")
    passkey.add_argument("--depths", type=_float_list, default=[0.0, 0.25, 0.5, 0.75, 1.0],
                         help="comma-separated needle depths in [0, 1] (fraction of the filler before the needle)")
    passkey.add_argument("--samples", type=int, default=2, help="prompts per (length, depth) cell, each a new key")
    passkey.add_argument("--filler", choices=["repeat", "corpus"], default="repeat",
                         help="repeated sentences (the original test) or bundled Shakespeare (needle in a haystack)")
    passkey.add_argument("--seed", type=int, default=0, help="seed of the random keys")
    passkey.add_argument("--output-dir", default="longctx_passkey", help="folder for passkey.json and passkey.png")
    passkey.set_defaults(func=run_passkey)

    needle = subparsers.add_parser("needle", formatter_class=formatter,
                                   help="needle in a haystack: answer recall per context length and depth (heat map)",
                                   description="Needle in a haystack (Kamradt 2023): a sentence hidden at each depth "
                                               "of bundled prose; the share of its answer's words the model repeats, "
                                               "per (context length, depth); Markdown table, JSON and a heat map.")
    _model_options(needle)
    needle.add_argument("--lengths", type=_int_list, default=[1024, 2048, 4096],
                        help="comma-separated prompt lengths in tokens")
    needle.add_argument("--depths", type=_float_list, default=[0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0],
                        help="comma-separated needle depths in [0, 1] (fraction of the haystack before the needle)")
    needle.add_argument("--output-dir", default="longctx_needle", help="folder for needle.json and needle.png")
    needle.set_defaults(func=run_needle)

    curve = subparsers.add_parser("position-loss", formatter_class=formatter,
                                  help="next-token loss against position (PNG), past the training length",
                                  description="Loss by position on contiguous bundled held-out text (KJV and "
                                              "Shakespeare validation files), one curve per --model.")
    _model_options(curve)
    curve.add_argument("--length", type=int, default=4096, help="tokens per row")
    curve.add_argument("--rows", type=int, default=4, help="rows averaged")
    curve.add_argument("--bucket", type=int, default=128, help="positions per point of the curve")
    curve.add_argument("--train-length", type=int, default=None,
                       help="draw a line at this training length (default: the first model's max_position_embeddings)")
    curve.add_argument("--output-dir", default="longctx_position_loss",
                       help="folder for position_loss.json and position_loss.png")
    curve.set_defaults(func=run_position_loss)

    memory = subparsers.add_parser("memory-plan", formatter_class=formatter,
                                   help="memory per GPU of long-context training stages, smallest cluster per stage",
                                   description="Memory per GPU (weights, optimizer shards, checkpointed activations, "
                                               "attention workspace, loss chunk) of a family's preset at each stage "
                                               "length on each cluster size, at the smallest context-parallel size "
                                               "that fits; a Markdown table (hf_smallllm.train.memory_plan).")
    memory.add_argument("--family", default="chuxin", help="model family")
    memory.add_argument("--preset", default="published", help="preset of the family")
    memory.add_argument("--lengths", type=_int_list, default=[32768, 131072, 1048576],
                        help="comma-separated stage lengths in tokens")
    memory.add_argument("--gpus", type=_int_list, default=[8, 32, 64], help="comma-separated cluster sizes")
    memory.add_argument("--gpu-gib", type=float, default=79.6, help="memory per GPU (H100-80GB reports 79.6 GiB)")
    memory.add_argument("--loss-chunk-size", type=int, default=8192, help="the recipe's loss_chunk_size")
    memory.set_defaults(func=run_memory_plan)


def _model_options(parser):
    parser.add_argument("--model", action="append", required=True, metavar="[NAME=]PATH",
                        help="a model folder or Hub id (repeatable; NAME labels it in tables and plots)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the first model's)")
    parser.add_argument("--set", action="append", default=[], metavar="[NAME:]KEY=VALUE", dest="overrides",
                        help="config field override at load time (YAML value), for the model NAME or for all")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="weights dtype")
    parser.add_argument("--attn-implementation", default="sdpa",
                        help="attention backend (eager, sdpa, flash_attention_2, flex_attention)")


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _float_list(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def parse_models(specs: list[str], overrides: list[str]) -> list[tuple[str, str, dict]]:
    """[(name, path, config overrides)] from `--model [NAME=]PATH` and `--set [NAME:]KEY=VALUE`."""
    import yaml

    from hf_smallllm.errors import UsageValueError

    models = []
    for spec in specs:
        name, _, path = spec.partition("=") if "=" in spec else ("", "", spec)
        models.append((name or path, path, {}))
    names = [name for name, _, _ in models]
    if len(set(names)) != len(names):
        raise UsageValueError(f"model names must differ: {names}; label them NAME=PATH")
    for text in overrides:
        if "=" not in text:
            raise UsageValueError(f"--set {text!r} must look like [NAME:]KEY=VALUE")
        target, value = text.split("=", 1)
        target_name, _, key = target.rpartition(":")
        if target_name and target_name not in names:
            raise UsageValueError(f"--set {text!r} names model {target_name!r}; models are {names}")
        for name, _, config in models:
            if not target_name or target_name == name:
                config[key.strip()] = yaml.safe_load(value)
    return models


def _load(path: str, overrides: dict, args):
    from hf_smallllm.inference.loading import load_model

    return load_model(path, dtype=args.dtype, device="cpu", config_overrides=overrides,
                      attn_implementation=args.attn_implementation)


def _tokenizer(args, models):
    from hf_smallllm.inference.loading import load_tokenizer

    return load_tokenizer(args.tokenizer or models[0][1])


def run_passkey(args) -> int:
    from hf_smallllm.longctx import make_passkey_samples, plot_passkey_grid, score_passkey

    samples = lambda tokenizer: make_passkey_samples(  # noqa: E731
        tokenizer, args.lengths, args.depths, args.samples, args.filler, seed=args.seed)
    return _run_length_depth(args, "passkey", samples, score_passkey, plot_passkey_grid,
                             lambda name, report: f"{name}: passkey accuracy {report.accuracy:.2f}")


def run_needle(args) -> int:
    from hf_smallllm.longctx import make_needle_samples, plot_needle_grid, score_needle

    return _run_length_depth(args, "needle", lambda tokenizer: make_needle_samples(tokenizer, args.lengths,
                                                                                  args.depths),
                             score_needle, plot_needle_grid,
                             lambda name, report: f"{name}: needle in a haystack {report.score:.2f}")


def _run_length_depth(args, kind: str, make_samples, score, plot, title) -> int:
    """Score every model on the same length x depth prompts; print each table, plot each heat map, write
    `<kind>.json`."""
    from pathlib import Path

    from hf_smallllm.runfiles import write_json_atomic

    models = parse_models(args.model, args.overrides)
    tokenizer = _tokenizer(args, models)
    samples = make_samples(tokenizer)
    output_dir = Path(args.output_dir)
    results = {}
    for name, path, overrides in models:
        report = score(_load(path, overrides, args), tokenizer, samples)
        results[name] = {"path": path, "overrides": overrides, **report.to_dict()}
        print(f"## {name}\n\n{report.to_markdown()}\n")
        stem = kind if len(models) == 1 else f"{kind}_{_safe(name)}"
        plot(report, output_dir / f"{stem}.png", title=title(name, report))
    write_json_atomic(output_dir / f"{kind}.json", results)
    print(f"wrote {output_dir / (kind + '.json')} and the heat maps next to it")
    return 0


def run_position_loss(args) -> int:
    from pathlib import Path

    from hf_smallllm.longctx import corpus_token_rows, loss_by_position, plot_loss_by_position
    from hf_smallllm.runfiles import write_json_atomic

    models = parse_models(args.model, args.overrides)
    tokenizer = _tokenizer(args, models)
    rows = corpus_token_rows(tokenizer, args.length, args.rows)
    curves, results, train_length = {}, {}, args.train_length
    for name, path, overrides in models:
        model = _load(path, overrides, args)
        train_length = train_length or model.config.max_position_embeddings
        curve = loss_by_position(model, rows, bucket_size=args.bucket)
        curves[name] = curve
        results[name] = {"path": path, "overrides": overrides, **curve.to_dict()}
    output_dir = Path(args.output_dir)
    print("| model | loss before " + f"{train_length} | loss after {train_length} |\n|---|---:|---:|")
    for name, curve in curves.items():
        before = curve.mean_between(0, min(train_length, args.length))
        after = curve.mean_between(train_length, args.length) if args.length >= train_length + args.bucket else None
        results[name].update({"loss_before_train_length": before, "loss_after_train_length": after})
        print(f"| {name} | {before:.4f} | {'-' if after is None else f'{after:.4f}'} |")
    plot_loss_by_position(curves, output_dir / "position_loss.png", train_length=train_length)
    write_json_atomic(output_dir / "position_loss.json", {"train_length": train_length, "models": results})
    print(f"wrote {output_dir / 'position_loss.json'} and {output_dir / 'position_loss.png'}")
    return 0


def run_memory_plan(args) -> int:
    from hf_smallllm import preset_config
    from hf_smallllm.errors import UsageValueError
    from hf_smallllm.train.memory_plan import plan_markdown

    try:
        config = preset_config(args.family, args.preset, loss_chunk_size=args.loss_chunk_size,
                               max_position_embeddings=max(args.lengths))
    except (KeyError, ValueError) as err:
        raise UsageValueError(f"--family/--preset: {err}") from err
    print(plan_markdown(config, args.lengths, args.gpus, args.gpu_gib, name=f"{args.family} {args.preset}"))
    return 0


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
