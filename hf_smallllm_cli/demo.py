"""`hf-smallllm demo`: the whole life of a small LLM on this machine, on embedded defaults (see hf_smallllm/demo.py)."""

from ._options import FAMILY_NAMES

COMMAND = "demo"
HELP = "train a tokenizer, pretrain, publish snapshots to a local Hub, reload, generate, evaluate (no network)"
DESCRIPTION = """Run the package end to end on the bundled corpus, with no network and no GPU (under 15 minutes on
2 CPU cores with the defaults): train a bilingual DeepSeek-style tokenizer; pretrain a tiny model with packed
EOS-reset rows, a two-stage mixture and per-domain validation; publish intermediate snapshots and the final model
with a model card to a local Hub-protocol server on 127.0.0.1 (or to a real Hub with --repo-id and a token);
reload a snapshot with AutoModelForCausalLM.from_pretrained(repo, revision=...); generate English and Chinese text;
print the domain-perplexity table and write the learning-curve plot."""

# = hf_smallllm.demo.DemoSettings' defaults (written out: reading them would import torch; a test compares them)
DEFAULTS = {"family": "tinyllama", "steps": 240, "snapshots": 3, "tokenizer_vocab": 4096,
            "output_dir": "smallllm-demo"}


def register(parser):
    parser.add_argument("--family", default=DEFAULTS["family"], choices=FAMILY_NAMES,
                        help="architecture to pretrain (its tiny-<family> recipe)")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="optimizer steps (4,096 tokens each)")
    parser.add_argument("--snapshots", type=int, default=DEFAULTS["snapshots"],
                        help="intermediate snapshots published as branches")
    parser.add_argument("--tokenizer-vocab", type=int, default=DEFAULTS["tokenizer_vocab"], help="tokenizer entries")
    parser.add_argument("--output-dir", default=DEFAULTS["output_dir"], help="where everything is written")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --output-dir")
    parser.add_argument("--repo-id", default=None,
                        help="publish to this repo on a real Hub (token from HF_TOKEN or `hf auth login`) instead "
                             "of a local server")
    parser.add_argument("--endpoint", default=None, help="Hub endpoint with --repo-id (default: HF_ENDPOINT)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args) -> int:
    from hf_smallllm.demo import DemoSettings, run_demo

    summary = run_demo(DemoSettings(output_dir=args.output_dir, family=args.family, steps=args.steps,
                                    snapshots=args.snapshots, tokenizer_vocab=args.tokenizer_vocab,
                                    repo_id=args.repo_id, endpoint=args.endpoint, overwrite=args.overwrite,
                                    progress=not args.no_progress))
    print(summary.describe())
    return 0
