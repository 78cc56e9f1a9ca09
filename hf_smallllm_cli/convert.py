"""`hf-smallllm convert`: official checkpoints in and out of the package format, each conversion verified by
logits (see hf_smallllm/convert/converter.py and docs/conversion.md)."""

from ._options import FAMILY_NAMES, print_help_and_fail

COMMAND = "convert"
HELP = "convert official / lit-gpt checkpoints to the package format and back, or export to native Llama/GLM"
DESCRIPTION = """Convert checkpoints, shard by shard, into a temporary folder renamed when complete. Every
conversion runs the source and the converted model on the same tokens and fails when the max |logit difference|
exceeds --tolerance (--no-verify skips it for models too large to run twice)."""

DIRECTIONS = {
    "official-to-package": "a family's official Hugging Face checkpoint -> the package format",
    "package-to-official": "the package format -> the family's official layout (exact round trip)",
    "litgpt": "a TinyLlama lit-gpt training checkpoint (iter-XXXXXX-ckpt.pth) -> the package format",
    "to-native": "the package format -> stock LlamaForCausalLM (or GlmForCausalLM for GEB), for vLLM, llama.cpp, TGI",
    "to-gguf": "the package format -> one GGUF file for llama.cpp (llama / chatglm / jais architecture)",
}


def register(parser):
    subparsers = parser.add_subparsers(dest="direction", metavar="DIRECTION")
    for name, help_text in DIRECTIONS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("source", help="checkpoint folder (or the .pth file for litgpt)")
        if name == "to-gguf":
            _register_gguf(sub)
            continue
        sub.add_argument("output", help="output folder (must not exist unless --overwrite)")
        if name == "official-to-package":
            sub.add_argument("--family", choices=FAMILY_NAMES,
                             help="needed when the official model_type is shared (llama: tinyllama or chuxin)")
        if name == "litgpt":
            sub.add_argument("--config", help="a package config.json or checkpoint folder describing the model "
                                              "(default: the --family preset)")
            sub.add_argument("--family", choices=FAMILY_NAMES, default="tinyllama",
                             help="family (default: %(default)s)")
            sub.add_argument("--preset", default="published", help="preset of the family (default: %(default)s)")
            sub.add_argument("--tokenizer", help="tokenizer folder to copy into the output")
        if name == "to-native":
            sub.add_argument("--target", choices=["auto", "llama", "glm"], default="auto",
                             help="native class (default: llama for Llama-shaped configs, glm for GEB)")
        sub.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                         help="dtype of the written tensors (default: the source's)")
        sub.add_argument("--max-shard-size", default="2GB", help="largest safetensors shard (default: %(default)s)")
        sub.add_argument("--tolerance", type=float, default=1e-4,
                         help="max |logit difference| allowed by the check (default: %(default)s)")
        sub.add_argument("--no-verify", action="store_true", help="skip the logit check (very large models)")
        sub.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
        sub.add_argument("--no-progress", action="store_true", help="no progress bar")
        sub.add_argument("--json", help="also write the conversion report as JSON to this file")
        sub.set_defaults(func=run)
    parser.set_defaults(func=lambda args: print_help_and_fail(parser))


def _register_gguf(sub) -> None:
    sub.add_argument("output", help="output .gguf file (must not exist unless --overwrite)")
    sub.add_argument("--outtype", choices=["f32", "f16", "bf16", "q8_0", "q4_0"], default="f32",
                     help="tensor type of the 2-D weights (norms and biases stay f32; default: %(default)s)")
    sub.add_argument("--tokenizer", help="tokenizer folder or .gguf vocabulary (default: the checkpoint folder)")
    sub.add_argument("--tolerance", type=float, default=None,
                     help="max |logit difference| allowed by the check (default: per outtype, 1e-4 for f32)")
    sub.add_argument("--no-verify", action="store_true", help="skip the logit check (very large models)")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    sub.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_argument("--json", help="also write the export report as JSON to this file")
    sub.set_defaults(func=run)


def run(args) -> int:
    from hf_smallllm import convert
    from hf_smallllm.convert.gguf import check_tolerance
    from hf_smallllm.convert.gguf_file import check_output_file
    from hf_smallllm.runfiles import write_json_atomic

    # the user's own values, checked before a conversion that may run for minutes
    check_tolerance(args.tolerance, "--tolerance")
    if args.json:
        check_output_file(args.json, "--json")
    if args.direction == "to-gguf":
        from hf_smallllm.convert.gguf import package_to_gguf

        report = package_to_gguf(args.source, args.output, outtype=args.outtype, tokenizer=args.tokenizer,
                                 verify=not args.no_verify, tolerance=args.tolerance, overwrite=args.overwrite,
                                 progress=not args.no_progress)
        print(report.summary())
        if args.json:
            write_json_atomic(args.json, report.to_dict())
        return 0
    common = dict(dtype=args.dtype, max_shard_size=args.max_shard_size, verify=not args.no_verify,
                  tolerance=args.tolerance, overwrite=args.overwrite, progress=not args.no_progress)
    if args.direction == "official-to-package":
        report = convert.official_to_package(args.source, args.output, family=args.family, **common)
    elif args.direction == "package-to-official":
        report = convert.package_to_official(args.source, args.output, **common)
    elif args.direction == "litgpt":
        report = convert.litgpt_to_package(args.source, args.output, config=args.config, family=args.family,
                                           preset=args.preset, tokenizer=args.tokenizer, **common)
    else:
        report = convert.package_to_native(args.source, args.output, target=args.target, **common)
    print(report.summary())
    if args.json:
        write_json_atomic(args.json, report.to_dict())
    return 0
