"""`hf-smallllm tokenizer train|inspect` end to end on the bundled corpus."""

import pytest
from transformers import AutoTokenizer

from hf_smallllm.resources import CORPUS
from hf_smallllm_cli import main


def test_train_then_inspect(tmp_path, capsys):
    out = tmp_path / "tok"
    code = main(["tokenizer", "train", "bundled:en_kjv.txt", str(CORPUS / "zh_poetry.jsonl"), "--family", "skywork",
                 "--vocab-size", "1000", "--max-chars", "400000", "--output-dir", str(out), "--no-progress",
                 "--special-token", "<|im_start|>", "--no-add-bos", "--add-eos"])
    assert code == 0
    assert "adds BOS: False, adds EOS: True" in capsys.readouterr().out
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("床前明月光 2024")["input_ids"]
    assert ids[-1] == 2 and ids[0] != 1
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") == 1003  # after [USER] [BOT] [SEP]

    assert main(["tokenizer", "inspect", str(out), "--text", "Hello 42"]) == 0
    shown = capsys.readouterr().out
    assert "1,004 tokens" in shown and "'<|im_start|>' 1003" in shown and "adds EOS: True" in shown


def test_user_mistakes_print_one_line(tmp_path, capsys):
    assert main(["tokenizer", "train", "--output-dir", str(tmp_path / "x")]) == 2
    assert "give training files" in capsys.readouterr().err
    assert main(["tokenizer", "train", str(tmp_path / "none.txt"), "--output-dir", str(tmp_path / "x")]) == 2
    assert "no training file matches" in capsys.readouterr().err
    assert main(["tokenizer", "inspect", str(tmp_path)]) == 2
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        main(["tokenizer", "train", "--help"])
    assert "--vocab-size" in capsys.readouterr().out
