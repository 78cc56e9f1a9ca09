"""`hf-smallllm smoke`: build, save, reload and generate with a tiny model of every family."""

from ._options import FAMILY_NAMES

COMMAND = "smoke"
HELP = "build a tiny model of every family, save it, reload it with AutoModelForCausalLM and generate"


def register(parser):
    parser.add_argument("--output-dir", default=None, help="where to save the tiny models (default: a temp folder)")
    parser.add_argument("--family", action="append", choices=FAMILY_NAMES,
                        help="only this family (repeatable; default: all five)")
    parser.add_argument("--new-tokens", type=int, default=8, help="tokens to generate per model")
    parser.set_defaults(func=run)


def run(args) -> int:
    from hf_smallllm.smoke import run_smoke

    for result in run_smoke(args.output_dir, args.family, args.new_tokens):
        print(f"{result.family:10s} {result.parameters:>9,d} params  saved {result.saved_to}  "
              f"reload max |dlogit| {result.max_logit_diff:.1e}  generated {result.generated}")
    return 0
