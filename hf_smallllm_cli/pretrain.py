"""`hf-smallllm pretrain`: train a model from a YAML recipe (see hf_smallllm/train/recipe.py)."""

from ._options import add_recipe_options, recipe_overrides

COMMAND = "pretrain"
HELP = "pretrain a model from a YAML recipe (one process, DDP, FSDP2 or DeepSpeed; resumable)"
DESCRIPTION = """Pretrain a model from a recipe: a YAML file or a shipped recipe name (tiny-<family> for CPU demos,
published-<family> for the published sizes; see training/recipes/). Works under `accelerate launch` and `torchrun`
for multi-process runs. Checkpoints land in training.output_dir/checkpoint-<step>; --resume continues from the
newest complete one with the same data order."""


def register(parser):
    parser.add_argument("--recipe", required=True, help="a recipe file or a shipped recipe name (e.g. tiny-tinyllama)")
    add_recipe_options(parser, {"--tokenizer": ("tokenizer", None), "--output-dir": ("training.output_dir", None)})
    parser.add_argument("--parallelism", choices=["auto", "ddp", "fsdp2", "zero1", "zero2", "zero3"],
                        help="shorthand for --set training.parallelism=... (default auto: what the launcher set up)")
    parser.add_argument("--allow-fallback", action="store_true",
                        help="run even when the requested parallelism or process count is not in effect (warns)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from hf_smallllm.train.recipe import load_recipe

    overrides = recipe_overrides(args)
    if args.parallelism:
        overrides.append(f"training.parallelism={args.parallelism}")
    if args.allow_fallback:
        overrides.append("training.allow_fallback=true")
    if args.print_recipe:
        import yaml

        print(yaml.safe_dump(load_recipe(args.recipe, overrides).to_dict(), sort_keys=False), end="")
        return 0
    import logging

    from hf_smallllm.train.api import run_pretraining
    from hf_smallllm.train.parallel import end_process_group

    train_logger = logging.getLogger("hf_smallllm.train")  # the parallel plan, fallbacks, skipped spikes
    if not train_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("hf-smallllm pretrain: %(message)s"))
        train_logger.addHandler(handler)
        train_logger.setLevel(logging.INFO)

    result = run_pretraining(args.recipe, overrides, resume=args.resume)
    end_process_group()  # a launched run's ranks leave together, with their gloo/NCCL groups torn down
    print(f"trained {result.family} for {result.global_step} steps ({result.tokens_seen:,d} tokens, "
          f"{result.parallelism} on {result.world_size} process(es)); "
          f"final checkpoint {result.final_checkpoint}; metrics {result.metrics_path}")
    return 0
