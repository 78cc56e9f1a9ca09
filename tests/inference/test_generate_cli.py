"""`hf-smallllm generate`: streams text from a saved checkpoint and fails with one clear line on bad input."""

import pytest

from hf_smallllm.cli import main


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
