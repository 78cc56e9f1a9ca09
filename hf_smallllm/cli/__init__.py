"""The `hf-smallllm` command line: one entry point, one module per subcommand.

Each module in this package that defines `COMMAND` (its name), `HELP` (one line) and `register(parser)` (adds its
options and sets `func`) becomes a subcommand; adding a capability means adding a module, nothing else. User
mistakes (`UsageError`, `ValueError`, `FileNotFoundError`) print one clear line and exit with status 2 instead of a
traceback; `--traceback` shows the full trace.
"""

import argparse
import importlib
import pkgutil
import sys

from ..errors import UsageError


def _subcommand_modules():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "COMMAND") and hasattr(module, "register"):
            yield module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-smallllm",
        description="Pretrain, fine-tune, convert, evaluate and publish small open LLMs "
        "(TinyLlama, GEB, ChuXin, BTLM, Skywork) as Hugging Face Transformers models.",
    )
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks for errors")
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        result = args.func(args)
    except (UsageError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, KeyError) as err:
        if args.traceback:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"hf-smallllm {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hf-smallllm {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
