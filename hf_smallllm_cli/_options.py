"""Options and checks that several subcommands share. Standard library only: this runs while parsing.

Choices the library also knows (family names, dtypes) are written out here because reading them from `hf_smallllm`
would import torch; tests/test_cli_imports.py checks that they match the library's.
"""

import argparse

FAMILY_NAMES = ("tinyllama", "geb", "chuxin", "btlm", "skywork")  # = hf_smallllm.FAMILY_NAMES
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
