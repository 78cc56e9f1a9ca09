"""Options and checks that several subcommands share. Standard library only: this runs while parsing.

Importing `hf_smallllm` imports torch, so choices the library also knows are found without it: the family names from
the registry's files (`family_names`), the dtypes written out here; tests/test_cli_imports.py checks that both match
the library's.
"""

import argparse
import ast
import importlib.util
from pathlib import Path


def family_names() -> tuple[str, ...]:
    """The families of `hf_smallllm.families`, in its listing order, read without importing the package: the registry
    has one `families/<name>.py` per family (it refuses a file not named after its family) and lists them in `ORDER`,
    then by name."""
    spec = importlib.util.find_spec("hf_smallllm")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return ()
    folder = Path(list(spec.submodule_search_locations)[0]) / "families"
    names = sorted(path.stem for path in folder.glob("*.py") if not path.name.startswith("_"))
    order: tuple[str, ...] = ()
    for node in ast.parse((folder / "__init__.py").read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "ORDER" for t in node.targets):
            order = tuple(ast.literal_eval(node.value))
    rank = {name: index for index, name in enumerate(order)}
    return tuple(sorted(names, key=lambda name: (rank.get(name, len(rank)), name)))


FAMILY_NAMES = family_names()  # = hf_smallllm.FAMILY_NAMES
MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16")  # "auto": the checkpoint's own dtype


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and shows defaults, except empty ones (the help text says what
    happens then)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == [] \
                or action.default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def print_help_and_fail(parser: argparse.ArgumentParser) -> int:
    """What a command group does when no subcommand is given: its help, exit status 2."""
    parser.print_help()
    return 2


def add_recipe_overrides(parser: argparse.ArgumentParser, shorthands: dict[str, tuple[str, str | None]]) -> None:
    """`--set KEY=VALUE` (repeatable) and shorthand options for common fields ({option: (recipe field, note for the
    help or None)}); `recipe_overrides(args)` turns them into the override list."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field, e.g. --set training.max_steps=20 (repeatable; YAML values)")
    for option, (field, note) in shorthands.items():
        parser.add_argument(option, help=f"shorthand for --set {field}=PATH" + (f" ({note})" if note else ""))
    parser.set_defaults(recipe_shorthands={_dest(option): field for option, (field, _) in shorthands.items()})


def add_recipe_options(parser: argparse.ArgumentParser, shorthands: dict[str, tuple[str, str | None]]) -> None:
    """What every training command takes: `add_recipe_overrides`, `--resume [CHECKPOINT]` and `--print-recipe`."""
    add_recipe_overrides(parser, shorthands)
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue from the newest complete checkpoint in the output folder, or from CHECKPOINT")
    parser.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")


def recipe_overrides(args: argparse.Namespace) -> list[str]:
    """The `--set` overrides followed by those of the shorthand options that were given (see add_recipe_options)."""
    overrides = list(args.overrides)
    for dest, field in args.recipe_shorthands.items():
        value = getattr(args, dest)
        if value:
            overrides.append(f"{field}={value}")
    return overrides


def _dest(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def named(spec: str) -> tuple[str, str]:
    """`NAME=PATH` -> (NAME, PATH); a plain `PATH` names itself."""
    name, sep, path = spec.partition("=")
    return (name, path) if sep and name and path else (spec, spec)


def check_positive(option: str, value, allow_none: bool = True) -> None:
    """Raise a UsageError unless `value` is a positive number (or None, when allowed)."""
    if value is None and allow_none:
        return
    if value is None or value < 1:
        from hf_smallllm.errors import UsageValueError

        raise UsageValueError(f"{option} must be a positive integer, got {value}")


__all__ = ["FAMILY_NAMES", "MODEL_DTYPES", "HelpFormatter", "add_recipe_options", "add_recipe_overrides",
           "check_positive", "named", "print_help_and_fail", "recipe_overrides"]
