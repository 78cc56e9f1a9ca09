"""Careless command-line values are one line naming the option and what is allowed, exit status 2 (issue 22)."""

import pytest

from hf_smallllm.cli import main as cli_main


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--temperature", "-1", "argument --temperature: -1 is out of range: must be >= 0"),
    ("--temperature", "nan", "argument --temperature: nan is out of range"),
    ("--top-p", "5", "argument --top-p: 5 is out of range: must be in (0, 1]"),
    ("--top-p", "0", "argument --top-p: 0 is out of range"),
    ("--top-k", "-3", "argument --top-k: -3 is out of range: must be >= 0"),
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


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from hf_smallllm.families import FAMILIES, preset_config

    folder = tmp_path_factory.mktemp("tiny-model")
    FAMILIES["tinyllama"].causal_lm_class(preset_config("tinyllama", "tiny")).save_pretrained(folder)
    return folder


def broken_copy(tiny_folder, tmp_path, how: str):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path / how
    shutil.copytree(tiny_folder, folder)
    weights_path = folder / "model.safetensors"
    weights = load_file(str(weights_path))
    if how == "truncated":
        data = weights_path.read_bytes()
        weights_path.write_bytes(data[: len(data) // 2])
    elif how == "missing":
        save_file({k: v for k, v in weights.items() if "layers.0.self_attn.q_proj" not in k}, str(weights_path))
    elif how == "unexpected":
        save_file({**weights, "model.extra.weight": torch.zeros(2)}, str(weights_path))
    elif how == "misshaped":
        key = next(k for k in weights if "q_proj" in k)
        save_file({**weights, key: torch.zeros(3, 5)}, str(weights_path))
    return folder


@pytest.mark.parametrize(("how", "message"), [
    ("truncated", "cannot read the weights of .*SafetensorError"),
    ("missing", r"missing \['model.layers.0.self_attn.q_proj.weight'\]"),
    ("unexpected", r"unexpected \['model.extra.weight'\]"),
    ("misshaped", "a tensor has the wrong shape"),
])
def test_the_shared_loader_refuses_broken_weights(tiny_folder, tmp_path, how, message):
    from hf_smallllm.errors import UsageValueError
    from hf_smallllm.inference.loading import load_model

    with pytest.raises(UsageValueError, match=message):
        load_model(broken_copy(tiny_folder, tmp_path, how), device="cpu")
    load_model(tiny_folder, device="cpu")  # the intact folder loads


def test_convert_names_unreadable_files(tiny_folder, tmp_path, capsys):
    not_zip = tmp_path / "iter-000001-ckpt.pth"
    not_zip.write_bytes(b"this is not a torch file" * 10)
    assert cli_main(["convert", "litgpt", str(not_zip), str(tmp_path / "out1"), "--family", "tinyllama",
                     "--preset", "tiny"]) == 2
    assert "iter-000001-ckpt.pth: not a readable PyTorch checkpoint" in capsys.readouterr().err
    truncated = broken_copy(tiny_folder, tmp_path, "truncated")
    assert cli_main(["convert", "to-native", str(truncated), str(tmp_path / "out2")]) == 2
    assert "model.safetensors: not a readable safetensors file" in capsys.readouterr().err


def _tiny_config_folder(folder, **changes):
    import json

    from hf_smallllm import preset_config

    preset_config("tinyllama", "tiny").save_pretrained(folder)
    values = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**values, **changes}))
    return folder


@pytest.mark.parametrize("command", ["generate", "eval-ppl"])
@pytest.mark.parametrize(("config_text", "message"), [
    ("{not json", "is not a valid JSON file"),
    (None, "norm_eps=-1 must be a positive number"),
])
def test_a_broken_or_invalid_config_is_named_not_taken_for_a_missing_tokenizer(tmp_path, capsys, command,
                                                                             config_text, message):
    folder = _tiny_config_folder(tmp_path / "model", norm_eps=-1)
    if config_text is not None:
        (folder / "config.json").write_text(config_text)
    argv = (["generate", str(folder), "--prompt", "hi"] if command == "generate"
            else ["eval", "ppl", "--model", str(folder), "--domain", f"d={tmp_path / 'd.txt'}"])
    (tmp_path / "d.txt").write_text("hello world")
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and str(folder) in err and "no tokenizer" not in err and "Traceback" not in err


def test_tokenizer_inspect_of_a_missing_folder_is_one_line(tmp_path, capsys):
    assert cli_main(["tokenizer", "inspect", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nowhere'}: no such folder" in err and len(err.strip().splitlines()) == 1
