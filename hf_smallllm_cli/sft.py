"""`hf-smallllm sft`: instruction fine-tuning (full, LoRA, QLoRA) and preference tuning (DPO) from a YAML recipe,
both on TRL's trainers, and adapter merging."""

import os

from ._options import add_recipe_options, print_help_and_fail, recipe_overrides

COMMAND = "sft"
HELP = "instruction and preference tuning on TRL: train (SFT, full/LoRA/QLoRA), dpo, merge an adapter, template"
DESCRIPTION = """Instruction fine-tuning. `sft train --recipe sft_lora --set model.init_from=CHECKPOINT` trains on
chat data (`messages` or instruction/input/output records, JSONL/JSON/Parquet or a datasets dataset) with the loss on
assistant tokens only, on TRL's SFTTrainer; shipped recipes: sft_lora, sft_qlora, sft_full, sft_geb
(hf_smallllm/resources/recipes/sft_*.yaml). `sft dpo --recipe dpo_lora --model SFT_OUTPUT` preference-tunes with
TRL's DPOTrainer on prompt/chosen/rejected records (dpo_lora, dpo_geb: GEB's SFT -> DPO pair). `sft merge --adapter
DIR --output DIR` merges a LoRA adapter into its full-precision base and saves the package format. `sft template
--tokenizer DIR --family geb --output DIR` installs a chat template into a tokenizer."""
DPO_DESCRIPTION = """Preference tuning (DPO) on TRL's DPOTrainer. `sft dpo --recipe dpo_lora --model
runs/sft-lora/merged` trains on prompt/chosen/rejected records (the bundled set: bundled:preferences.jsonl) with the
recipe's dpo section (beta, loss_type, ref_model). The reference policy is dpo.ref_model when given, else the starting
model itself: with LoRA the policy with its adapters disabled, without LoRA a frozen copy of --model. Shipped recipes:
dpo_lora, dpo_geb (stage 2 of GEB's alignment after sft_geb)."""


def register(parser):
    sub = parser.add_subparsers(dest="sft_command", metavar="ACTION")
    train = sub.add_parser("train", help="fine-tune from a recipe", description=DESCRIPTION)
    _run_options(train, "an SFT recipe file or shipped name (sft_lora, sft_qlora, sft_full, sft_geb)",
                 "replace the recipe's data sources with these files (repeatable; format auto-detected)", {})
    train.set_defaults(func=run_train)

    dpo = sub.add_parser("dpo", help="preference-tune (DPO) from a recipe", description=DPO_DESCRIPTION)
    _run_options(dpo, "a DPO recipe file or shipped name (dpo_lora, dpo_geb)",
                 "replace the recipe's preference sources with these files (prompt/chosen/rejected records)",
                 {"--ref-model": ("dpo.ref_model", "an explicit reference model")})
    dpo.set_defaults(func=run_dpo)

    merge = sub.add_parser("merge", help="merge a LoRA adapter into its base model and save it")
    merge.add_argument("--adapter", required=True, help="an adapter folder (e.g. OUTPUT/checkpoint-N)")
    merge.add_argument("--output", required=True, help="folder for the merged model (written atomically)")
    merge.add_argument("--base", help="the base model folder (default: the adapter's base_model_name_or_path)")
    merge.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                       help="dtype to load the base and save the merged model in")
    merge.set_defaults(func=run_merge)

    template = sub.add_parser("template", help="install a chat template (and its tokens) into a tokenizer folder")
    template.add_argument("--tokenizer", required=True, help="a tokenizer folder")
    template.add_argument("--format", default="auto",
                          help="generic, zephyr, geb, chatglm3, skywork, or auto (from --family)")
    template.add_argument("--family", help="the model family, for --format auto")
    template.add_argument("--output", required=True, help="where to save the tokenizer with the template")
    template.set_defaults(func=run_template)
    parser.set_defaults(func=lambda args: print_help_and_fail(parser))


def _run_options(parser, recipe_help: str, data_help: str, shorthands: dict) -> None:
    parser.add_argument("--recipe", required=True, help=recipe_help)
    add_recipe_options(parser, {"--model": ("model.init_from", "the checkpoint to fine-tune"),
                                "--output-dir": ("training.output_dir", None), **shorthands})
    parser.add_argument("--data", action="append", default=[], metavar="PATH", help=data_help)


def _train(args, load, run, verb: str) -> int:
    recipe = load(args.recipe, recipe_overrides(args))
    if args.data:
        recipe.data.sources = [{"name": f"data{i}", "path": path} for i, path in enumerate(args.data)]
    if args.print_recipe:
        import yaml

        print(yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True), end="")
        return 0
    result = run(recipe, resume=args.resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # in a multi-process run the main process reports
    print(f"{verb} for {result.global_step} steps (train loss {result.train_loss:.4f}"
          + (f", eval loss {result.eval_loss:.4f}" if result.eval_loss is not None else "") + f"); data: "
          f"{result.report.summary()}; last checkpoint {result.final_checkpoint}; model {result.merged_dir}")
    return 0


def run_train(args) -> int:
    from hf_smallllm.sft.api import run_sft
    from hf_smallllm.sft.recipe import load_sft_recipe

    return _train(args, load_sft_recipe, run_sft, "fine-tuned")


def run_dpo(args) -> int:
    from hf_smallllm.sft.api import run_dpo as run
    from hf_smallllm.sft.recipe import load_dpo_recipe

    return _train(args, load_dpo_recipe, run, "preference-tuned")


def run_merge(args) -> int:
    from hf_smallllm.sft.adapters import export_merged

    path = export_merged(args.adapter, args.output, base=args.base, dtype=args.dtype)
    print(f"merged {args.adapter} into {path}")
    return 0


def run_template(args) -> int:
    from hf_smallllm.errors import UsageValueError
    from hf_smallllm.families import FAMILIES, GENERIC_FAMILY
    from hf_smallllm.inference.loading import load_tokenizer
    from hf_smallllm.sft.templates import chat_format_for, install_chat_template

    if args.family is not None and args.family not in FAMILIES and args.family != GENERIC_FAMILY:
        raise UsageValueError(f"--family {args.family!r} is not a family; choose one of {sorted(FAMILIES)} (or "
                              f"{GENERIC_FAMILY!r} for a custom config)")
    fmt = chat_format_for(args.family, args.format)  # checked before the tokenizer is read
    tokenizer = load_tokenizer(args.tokenizer)
    added = install_chat_template(tokenizer, fmt)
    tokenizer.save_pretrained(args.output)
    note = f" (added tokens {fmt.special_tokens}; the model's embedding needs {len(tokenizer)} rows)" if added else ""
    print(f"installed the {fmt.name} chat template into {args.output}{note}")
    return 0
