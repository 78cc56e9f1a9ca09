"""`hf-smallllm pretrain`: train a model from a YAML recipe (see hf_smallllm/train/recipe.py)."""

from ._options import add_recipe_options, recipe_overrides

COMMAND = "pretrain"
HELP = "pretrain a model from a YAML recipe (Trainer or Accelerate loop; resumable)"
DESCRIPTION = """Pretrain a model from a recipe: a YAML file or a shipped recipe name (tiny-<family> for CPU demos,
published-<family> for the published sizes; see training/recipes/). Works under `accelerate launch` and `torchrun`
for multi-process runs. Checkpoints land in training.output_dir/checkpoint-<step>; --resume continues from the
newest complete one with the same data order."""


def register(parser):
    parser.add_argument("--recipe", required=True, help="a recipe file or a shipped recipe name (e.g. tiny-tinyllama)")
    add_recipe_options(parser, {"--tokenizer": ("tokenizer", None), "--output-dir": ("training.output_dir", None)})
    parser.add_argument("--entry", choices=["trainer", "accelerate"],
                        help="training loop (default: the recipe's training.entry, normally trainer)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from hf_smallllm.train.recipe import load_recipe

    overrides = recipe_overrides(args)
    if args.print_recipe:
        import yaml

        print(yaml.safe_dump(load_recipe(args.recipe, overrides).to_dict(), sort_keys=False), end="")
        return 0
    from hf_smallllm.train.api import run_pretraining

    result = run_pretraining(args.recipe, overrides, resume=args.resume, entry=args.entry)
    print(f"trained {result.family} for {result.global_step} steps ({result.tokens_seen:,d} tokens); "
          f"final checkpoint {result.final_checkpoint}; metrics {result.metrics_path}")
    return 0
