"""`hf-smallllm data`: prepare a recipe's sources as token shards once, inspect and verify prepared folders."""

from ._options import add_recipe_overrides, recipe_overrides

COMMAND = "data"
HELP = "prepare token shards for pretraining once (then every process reads only its rows); info; verify"
DESCRIPTION = """Tokenize the sources a recipe names once, into token shards with a manifest
(hf_smallllm/data/shards.py), in parallel worker processes, resumably: re-run the same command after a kill and it
continues. Point the recipe at the folder with `data.prepared: FOLDER` (or `--set data.prepared=FOLDER`) and training
reads the shards: no process tokenizes, and each reads only the rows of its own micro-batches."""


def register(parser):
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    prepare = actions.add_parser("prepare", help="tokenize a recipe's sources into token shards",
                                 description=DESCRIPTION)
    prepare.add_argument("--recipe", required=True, help="a recipe file or a shipped recipe name")
    add_recipe_overrides(prepare, {"--tokenizer": ("tokenizer", None)})
    prepare.add_argument("--output", help="the folder to write (default: the recipe's data.prepared)")
    prepare.add_argument("--workers", type=int, default=None,
                         help="tokenizing processes (default: the number of CPU cores; 0: in this process)")
    prepare.add_argument("--shard-chars", type=int, default=None,
                         help="characters of text per shard (default 32,000,000: about 8M tokens)")
    prepare.add_argument("--overwrite", action="store_true",
                         help="replace tokens of another tokenizer or source spec found in the folder")
    prepare.add_argument("--no-progress", action="store_true", help="no progress bar")
    prepare.set_defaults(func=run_prepare)
    info = actions.add_parser("info", help="summarise a prepared folder's manifest")
    info.add_argument("folder")
    info.set_defaults(func=run_info)
    verify = actions.add_parser("verify", help="re-hash every shard and check every document index")
    verify.add_argument("folder")
    verify.set_defaults(func=run_verify)


def run_prepare(args) -> int:
    from hf_smallllm.data.prepare import DEFAULT_SHARD_CHARS
    from hf_smallllm.train.build import prepare_data
    from hf_smallllm.train.recipe import load_recipe

    recipe = load_recipe(args.recipe, recipe_overrides(args))
    folder, manifest = prepare_data(recipe, args.output, workers=args.workers,
                                      shard_chars=DEFAULT_SHARD_CHARS if args.shard_chars is None else args.shard_chars,
                                      overwrite=args.overwrite, progress=not args.no_progress)
    print(describe(folder, manifest))
    if not recipe.data.prepared or str(recipe.data.prepared) != str(folder):
        print(f"train on it with: --set data.prepared={folder}")
    return 0


def run_info(args) -> int:
    from hf_smallllm.data.shards import PreparedDataError, read_manifest

    manifest = read_manifest(args.folder)
    if manifest is None:
        raise PreparedDataError(f"{args.folder}: no manifest.json (not a prepared folder)")
    print(describe(args.folder, manifest))
    return 0


def run_verify(args) -> int:
    from hf_smallllm.data.shards import verify_prepared

    counts = verify_prepared(args.folder)
    print(f"{args.folder}: {len(counts)} sources, {sum(counts.values()):,d} tokens, every shard intact")
    return 0


def describe(folder, manifest: dict) -> str:
    tokenizer = manifest["tokenizer"]
    lines = [(f"{folder}: {manifest['dtype']} tokens of {tokenizer['class']} {tokenizer['name_or_path']!r} "
              f"({tokenizer['vocab_size']:,d} entries, fingerprint {tokenizer['sha256'][:12]})")]
    for name, entry in manifest["sources"].items():
        state = "" if entry.get("complete") else "  (incomplete: run prepare again)"
        filtered = (f"  ({entry.get('filtered_out', 0):,d} records dropped by its filters)"
                    if entry.get("filters") else "")
        lines.append(f"  {name:<16} {entry['tokens']:>15,d} tokens {entry['documents']:>12,d} documents "
                     f"{len(entry['shards']):>6,d} shards{filtered}{state}")
    return "\n".join(lines)
