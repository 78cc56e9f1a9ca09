"""`hf-smallllm generate`: streams text from a saved checkpoint and fails with one clear line on bad input."""

import pytest

from hf_smallllm_cli import main


def test_generate_streams_text(tiny_checkpoint, capsys):
    code = main(["generate", str(tiny_checkpoint), "--prompt", "Now, fair Hippolyta", "--max-new-tokens", "6"])
    out, err = capsys.readouterr()
    assert code == 0
    assert out.startswith("Now, fair Hippolyta")
    assert len(out.strip()) > len("Now, fair Hippolyta")
    assert "6 new" in err and "tokens/s" in err


def test_generate_sampling_and_int8(tiny_checkpoint, capsys):
    code = main(["generate", str(tiny_checkpoint), "--prompt", "To be", "--max-new-tokens", "4", "--temperature",
                 "0.8", "--top-k", "20", "--quantize", "int8"])
    assert code == 0
    assert "4 new" in capsys.readouterr().err


def test_generate_errors_are_one_line(tiny_checkpoint, tmp_path, capsys):
    assert main(["generate", str(tmp_path), "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hf-smallllm generate: error:" in err
    assert main(["generate", str(tiny_checkpoint), "--prompt", "x", "--max-new-tokens", "0"]) == 2
    assert "max_new_tokens=0" in capsys.readouterr().err
    assert main(["generate", str(tiny_checkpoint), "--prompt", "x", "--chat"]) == 2
    assert "chat template" in capsys.readouterr().err


def test_generate_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--help"])
    assert exit_info.value.code == 0
    assert "--quantize" in capsys.readouterr().out


def test_generate_reports_and_obeys_the_linears_choice(tiny_checkpoint, capsys):
    prompt = ["--prompt", "To be", "--max-new-tokens", "3"]
    assert main(["generate", str(tiny_checkpoint), *prompt, "--linears", "plain"]) == 0
    assert "[plain linears (as asked)]" in capsys.readouterr().err
    assert main(["generate", str(tiny_checkpoint), *prompt]) == 0  # auto: timed, or too small to pack
    assert "linears" in capsys.readouterr().err
    assert main(["generate", str(tiny_checkpoint), *prompt, "--linears", "packed", "--dtype", "float16"]) == 2
    assert "packed linears need float32 or bfloat16" in capsys.readouterr().err
