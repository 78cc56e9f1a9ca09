"""`hf-smallllm sft`: help, recipe printing, template installation, clear one-line errors."""

from transformers import AutoTokenizer

from hf_smallllm_cli import main


def test_help_and_print_recipe(capsys):
    assert main(["sft", "train", "--recipe", "sft_qlora", "--model", "runs/base", "--set", "training.max_steps=7",
                 "--print-recipe"]) == 0
    out = capsys.readouterr().out
    assert "quantization: 4bit" in out and "max_steps: 7" in out


def test_template_command_installs_tokens(tokenizer, tmp_path, capsys):
    tokenizer.save_pretrained(tmp_path / "tok")
    assert main(["sft", "template", "--tokenizer", str(tmp_path / "tok"), "--family", "skywork",
                 "--output", str(tmp_path / "out")]) == 0
    saved = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert "[BOT]" in saved.get_vocab() and "[USER]" in saved.chat_template


def test_user_mistakes_are_one_line_errors(tmp_path, capsys):
    assert main(["sft", "merge", "--adapter", str(tmp_path), "--output", str(tmp_path / "m")]) == 2
    assert "holds no adapter" in capsys.readouterr().err
    assert main(["sft", "train", "--recipe", "sft_lora", "--set", "lora.r=0"]) == 2
    assert "lora: r >= 1" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_unreadable_sft_data_is_one_line_through_the_command(tiny_checkpoint, tmp_path, capsys):
    """Issue 31: Latin-1 SFT data was a UnicodeDecodeError traceback."""
    record = '{"messages": [{"role": "user", "content": "caf\u00e9"}]}\n'
    (tmp_path / "data.jsonl").write_bytes(record.encode("latin-1"))
    assert main(["sft", "train", "--recipe", "sft_lora", "--model", tiny_checkpoint("tinyllama"), "--output-dir",
                 str(tmp_path / "out"), "--set", f"data.sources=[{{name: d, paths: [{tmp_path / 'data.jsonl'}]}}]",
                 "--set", "training.max_steps=1"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("hf-smallllm")]
    assert "Traceback" not in err and len(lines) == 1 and "data.jsonl: not UTF-8 text" in lines[0], err
