"""`hf-smallllm eval ...` on a trained tiny checkpoint: tables printed, JSON written, user mistakes reported in one
line with exit status 2."""

import json
from pathlib import Path

import pytest

from hf_smallllm_cli import main

from .helpers import CORPUS


@pytest.fixture(scope="module")
def domain_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("domains")
    kjv = folder / "kjv.txt"
    kjv.write_text((CORPUS / "validation" / "en_kjv.txt").read_text(encoding="utf-8")[:3000], encoding="utf-8")
    code = folder / "code.jsonl"
    lines = (CORPUS / "validation" / "code_python.jsonl").read_text(encoding="utf-8").splitlines()[:4]
    code.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"kjv": kjv, "code": code}


def test_ppl_compares_models_and_writes_json(trained_checkpoint, domain_files, tmp_path, capsys):
    output = tmp_path / "ppl.json"
    status = main(["eval", "ppl", "--model", f"mine={trained_checkpoint}", "--model", f"again={trained_checkpoint}",
                   "--domain", f"kjv={domain_files['kjv']}", "--domain", f"code={domain_files['code']}",
                   "--max-chars", "300", "--max-documents", "3", "--output", str(output)])
    assert status == 0
    table = capsys.readouterr().out
    assert "| model | kjv | code | Average |" in table and "| mine |" in table and "| again |" in table
    report = json.loads(output.read_text())
    assert report["max_chars"] == 300 and report["domains"]["kjv"]["documents"] == 3
    mine, again = report["models"]["mine"], report["models"]["again"]
    assert mine["average_ppl"] == pytest.approx(again["average_ppl"], rel=1e-6)
    # The first model's tokenizer is the reference: its normalised loss is its own loss.
    assert mine["domains"]["kjv"]["normalized_loss"] == pytest.approx(mine["domains"]["kjv"]["loss"])


def test_sliding_ppl(trained_checkpoint, tmp_path, capsys):
    text = tmp_path / "long.txt"
    text.write_text((CORPUS / "validation" / "en_kjv.txt").read_text(encoding="utf-8")[:2500], encoding="utf-8")
    output = tmp_path / "sliding.json"
    assert main(["eval", "sliding-ppl", "--model", str(trained_checkpoint), "--file", str(text), "--window", "128",
                 "--stride", "96", "--output", str(output)]) == 0
    assert "| file | tokens | windows | loss | ppl |" in capsys.readouterr().out
    result = json.loads(output.read_text())["files"][str(text)]
    assert result["window"] == 128 and result["stride"] == 96 and result["windows"] > 1 and result["ppl"] > 1


def test_contamination_command(trained_checkpoint, tmp_path, capsys):
    from hf_smallllm.eval.contamination_demo import qa_split_paths

    splits = qa_split_paths()
    output = tmp_path / "contamination.json"
    status = main(["eval", "contamination", "--model", str(trained_checkpoint), "--train", str(splits["train"]),
                   "--test", str(splits["test"]), "--reference", str(splits["reference"]), "--limit", "24",
                   "--fail-if-flagged", "--output", str(output)])
    assert status == 0  # the clean model is not flagged
    assert "| delta1 = L_test - L_ref |" in capsys.readouterr().out
    report = json.loads(output.read_text())
    assert report["flagged"] is False and report["train"]["samples"] == 24
    assert report["delta1"] == pytest.approx(report["L_test"] - report["L_ref"])


def test_tasks_and_plot(tmp_path, capsys):
    assert main(["eval", "tasks"]) == 0
    assert "smallllm_mmlu_astronomy" in capsys.readouterr().out.split()
    assert main(["eval", "tasks", "--path"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert (folder / "smallllm_zh_poet.yaml").is_file()  # lm-eval's --include_path as it is
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps({"step": s, "tokens": 100 * s, "eval/kjv/loss": 5.0 - s,
                                             "eval/kjv/ppl": 2.0}) for s in range(3)) + "\n")
    assert main(["eval", "plot", str(metrics)]) == 0
    assert (tmp_path / "domain_eval.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, message", [
    (["eval", "bench", "--model", "m", "--tasks", "smallllm_humaneval"], "--confirm-run-unsafe-code"),
    (["eval", "ppl", "--model", "a=x", "--model", "a=y"], "model names must be unique"),
    (["eval", "contamination", "--model", "m", "--train", "no.jsonl", "--test", "no.jsonl", "--reference",
      "no.jsonl"], "no such file"),
    (["eval", "plot", "missing.jsonl"], "no such metrics file"),
    (["eval", "sliding-ppl", "--model", "m", "--file", "f", "--stride", "0"], "--stride must be a positive"),
])
def test_user_mistakes_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    for name in ("ppl", "sliding-ppl", "contamination", "contamination-demo", "bench", "tasks", "lm-eval", "plot"):
        assert name in out
