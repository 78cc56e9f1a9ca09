"""`hf-smallllm --help` and every `hf-smallllm COMMAND [SUBCOMMAND] --help` parse without importing torch,
transformers or the library (whose `__init__` imports both), and the choices the CLI writes out agree with the
library's."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_smallllm_cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "hf_smallllm")

PROBE = """
import contextlib, io, sys
from hf_smallllm_cli import build_parser

parser = build_parser()
for line in sys.stdin.read().splitlines():
    argv = line.split() + ["--help"]
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit as done:
            assert done.code == 0, (argv, done.code)
print(" ".join(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))))
"""


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _command_paths(parser, prefix=()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, sub in _subparsers(parser).items():
        paths += _command_paths(sub, prefix + (name,))
    return paths


COMMANDS = sorted(_subparsers(build_parser()))


@pytest.mark.parametrize("command", ["(top level)", *COMMANDS])
def test_help_imports_neither_torch_nor_transformers(command):
    parser = build_parser()
    paths = [()] if command == "(top level)" else _command_paths(_subparsers(parser)[command], (command,))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", PROBE, *HEAVY], input="\n".join(" ".join(p) for p in paths),
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"--help of {paths} imported {done.stdout.split()}"


def test_console_script_help_is_light():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "hf_smallllm_cli", "--help"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and "usage: hf-smallllm" in done.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert imported & set(HEAVY) == set()


def test_written_out_choices_match_the_library():
    import hf_smallllm
    from hf_smallllm.demo import DemoSettings
    from hf_smallllm.inference import generation, loading
    from hf_smallllm_cli import _options, demo, generate

    assert _options.FAMILY_NAMES == tuple(hf_smallllm.FAMILY_NAMES)
    assert _options.MODEL_DTYPES == loading.MODEL_DTYPES
    assert generate.DTYPE_CHOICES == generation.DTYPE_CHOICES
    assert generate.QUANTIZATION_CHOICES == generation.QUANTIZATION_CHOICES
    assert demo.DEFAULTS == {key: getattr(DemoSettings(), key) for key in demo.DEFAULTS}


def test_only_usage_errors_are_one_line(monkeypatch, capsys):
    """A UsageError prints one line and exits 2; any other exception (a bug) propagates with its traceback, and
    --traceback shows a usage error's trace too."""
    from hf_smallllm.errors import UsageValueError
    from hf_smallllm_cli import main, smoke

    def command_raising(error):
        monkeypatch.setattr(smoke, "register", lambda parser: parser.set_defaults(func=lambda args: _raise(error)))

    command_raising(UsageValueError("--new-tokens must be positive, got 0"))
    assert main(["smoke"]) == 2
    assert capsys.readouterr().err == "hf-smallllm smoke: error: --new-tokens must be positive, got 0\n"
    with pytest.raises(UsageValueError):
        main(["--traceback", "smoke"])
    for bug in (ValueError("a bug"), KeyError("a bug"), FileNotFoundError("a bug")):
        command_raising(bug)
        with pytest.raises(type(bug), match="a bug"):
            main(["smoke"])


def _raise(error):
    raise error


def test_subcommands_live_in_hf_smallllm_cli():
    """hf_smallllm/cli/ is only the alias of hf_smallllm_cli: a subcommand module added there would not be found."""
    alias = ROOT / "hf_smallllm" / "cli"
    assert sorted(p.name for p in alias.glob("*.py")) == ["__init__.py", "__main__.py"], \
        "put subcommand modules in hf_smallllm_cli/ (see its __init__.py)"


def test_importing_the_package_shows_no_bitsandbytes_kernel_notice():
    """Issue 31: every run printed bitsandbytes' "Failed to load CPU gemm_4bit_forward ... Set trust_remote_code=True"
    (PEFT imports bitsandbytes, which looks the kernel up on the Hub). Its own CPU kernel serves; the notice is
    dropped."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import hf_smallllm.train.api, peft, bitsandbytes"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "gemm_4bit_forward" not in done.stderr + done.stdout
