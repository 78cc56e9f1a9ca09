"""`hf-smallllm pretrain`: train a model from a YAML recipe (see hf_smallllm/train/recipe.py)."""

COMMAND = "pretrain"
HELP = "pretrain a model from a YAML recipe (Trainer or Accelerate loop; resumable)"
DESCRIPTION = """Pretrain a model from a recipe: a YAML file or a shipped recipe name (tiny-<family> for CPU demos,
published-<family> for the published sizes; see training/recipes/). Works under `accelerate launch` and `torchrun`
for multi-process runs. Checkpoints land in training.output_dir/checkpoint-<step>; --resume continues from the
newest complete one with the same data order."""


def register(parser):
    parser.add_argument("--recipe", required=True, help="a recipe file or a shipped recipe name (e.g. tiny-tinyllama)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field, e.g. --set training.max_steps=20 (repeatable; YAML values)")
    parser.add_argument("--tokenizer", help="shorthand for --set tokenizer=PATH")
    parser.add_argument("--output-dir", help="shorthand for --set training.output_dir=PATH")
    parser.add_argument("--entry", choices=["trainer", "accelerate"],
                        help="training loop (default: the recipe's training.entry, normally trainer)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue from the newest complete checkpoint in the output folder, or from CHECKPOINT")
    parser.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")
    parser.set_defaults(func=run)


def overrides_from_args(args) -> list[str]:
    overrides = list(args.overrides)
    if args.tokenizer:
        overrides.append(f"tokenizer={args.tokenizer}")
    if args.output_dir:
        overrides.append(f"training.output_dir={args.output_dir}")
    return overrides


def run(args) -> int:
    from ..train.recipe import load_recipe

    overrides = overrides_from_args(args)
    if args.print_recipe:
        import yaml

        print(yaml.safe_dump(load_recipe(args.recipe, overrides).to_dict(), sort_keys=False), end="")
        return 0
    from ..train.api import run_pretraining

    result = run_pretraining(args.recipe, overrides, resume=args.resume, entry=args.entry)
    print(f"trained {result.family} for {result.global_step} steps ({result.tokens_seen:,d} tokens); "
          f"final checkpoint {result.final_checkpoint}; metrics {result.metrics_path}")
    return 0
