"""The `hf-smallllm` command line: one entry point, one module per subcommand.

Each module in this package that defines `COMMAND` (its name), `HELP` (one line) and `register(parser)` (adds its
options and sets `func`) becomes a subcommand; adding a capability means adding a module, nothing else.

Why this is a top-level package and not `hf_smallllm.cli`: importing anything under `hf_smallllm` runs
`hf_smallllm/__init__.py`, which imports the models (torch, transformers) to register the Auto classes. Here,
parsing and `--help` import only the standard library (tests/test_cli_imports.py checks that no torch or
transformers module is loaded after parsing); each subcommand imports the library inside its `run` function.
`hf_smallllm.cli` stays importable as an alias of this package.

Errors: a `hf_smallllm.errors.UsageError` (a mistake in what the user asked for) prints one line and exits with
status 2; anything else is a bug and shows its traceback. `--traceback` shows the trace of a usage error too.
"""

import argparse
import importlib
import os
import sys


def _subcommand_modules():
    # A plain listing of this folder: pkgutil.iter_modules would import inspect (a tenth of the startup time).
    names = sorted(entry.name[:-3] for entry in os.scandir(os.path.dirname(__file__))
                   if entry.name.endswith(".py") and not entry.name.startswith("_"))
    for name in names:
        module = importlib.import_module(f"{__name__}.{name}")
        if hasattr(module, "COMMAND") and hasattr(module, "register"):
            yield module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-smallllm",
        description="Pretrain, fine-tune, convert, evaluate and publish small open LLMs "
        "(TinyLlama, GEB, ChuXin, BTLM, Skywork) as Hugging Face Transformers models.",
    )
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks for usage errors too")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _subcommand_modules():
        sub = subparsers.add_parser(
            module.COMMAND,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        module.register(sub)
    return parser


def is_usage_error(error: BaseException) -> bool:
    """Whether `error` is a `hf_smallllm.errors.UsageError`. Looked up in `sys.modules` rather than imported: a
    command that never imported the library cannot have raised one, and importing `hf_smallllm` here would cost
    the torch import this package exists to avoid."""
    errors = sys.modules.get("hf_smallllm.errors")
    return errors is not None and isinstance(error, errors.UsageError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print(f"hf-smallllm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.traceback or not is_usage_error(err):
            raise
        print(f"hf-smallllm {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


__all__ = ["build_parser", "is_usage_error", "main"]
