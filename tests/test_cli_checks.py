"""Careless command-line values are one line naming the option and what is allowed, exit status 2 (issue 22)."""

import pytest

from hf_smallllm.cli import main as cli_main


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--temperature", "-1", "argument --temperature: -1 is out of range: must be >= 0"),
    ("--temperature", "nan", "argument --temperature: nan is out of range"),
    ("--top-p", "5", "argument --top-p: 5 is out of range: must be in (0, 1]"),
    ("--top-p", "0", "argument --top-p: 0 is out of range"),
    ("--top-k", "-3", "argument --top-k: -3 is out of range: must be >= 0"),
    ("--max-new-tokens", "-1", "argument --max-new-tokens: -1 is out of range: must be >= 1"),
    ("--repetition-penalty", "0", "argument --repetition-penalty: 0 is out of range: must be > 0"),
    ("--temperature", "hot", "argument --temperature: 'hot' is not a number"),
])
def test_generate_sampling_options_are_checked(tmp_path, capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["generate", str(tmp_path), "--prompt", "hi", option, value])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(("device", "message"), [
    ("nonsense", "--device 'nonsense' is not a torch device"),
    ("cuda:99", "--device cuda:99"),
])
def test_devices_are_checked_before_loading(tmp_path, capsys, device, message):
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    assert cli_main(["generate", str(tmp_path / "not-loaded"), "--prompt", "hi", "--device", device]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cuda_without_cuda_is_one_line(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert cli_main(["generate", str(tmp_path), "--prompt", "hi", "--device", "cuda"]) == 2
    assert "--device cuda: torch sees no CUDA GPU" in capsys.readouterr().err


def test_sft_template_refuses_an_unknown_family(tmp_path, capsys):
    assert cli_main(["sft", "template", "--tokenizer", str(tmp_path), "--family", "nosuch",
                     "--output", str(tmp_path / "out")]) == 2
    assert "--family 'nosuch' is not a family" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_tokenizer_train_refuses_an_empty_corpus(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert cli_main(["tokenizer", "train", "--output-dir", str(tmp_path / "tok"), "--vocab-size", "300",
                     "--no-progress", str(empty)]) == 2
    assert "no training text in" in capsys.readouterr().err and not (tmp_path / "tok").exists()


def test_snapshots_of_an_unreachable_endpoint_is_one_line(capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert cli_main(["snapshots", "tests/repo", "--endpoint", "http://127.0.0.1:9", "--token", "x"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach http://127.0.0.1:9 to list tests/repo" in err and "Traceback" not in err
