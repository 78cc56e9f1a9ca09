"""One entry point with a subcommand per capability, each with --help."""

import pytest

from hf_smallllm_cli import build_parser, main

EXPECTED = ["demo", "tokenizer", "pretrain", "sft", "convert", "publish", "snapshots", "eval", "longctx", "generate",
            "bench", "smoke"]


def test_every_capability_is_a_subcommand():
    choices = build_parser()._subparsers._group_actions[0].choices
    assert set(EXPECTED) <= set(choices)


@pytest.mark.parametrize("command", EXPECTED)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert "usage: hf-smallllm " + command in capsys.readouterr().out
