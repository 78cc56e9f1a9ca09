"""The README's main job, end to end at a reduced size: tokenizer, pretraining with per-domain validation,
snapshots published to the local Hub server, reload by revision in a fresh process, generation, domain perplexity,
plot and model card."""

import json

import pytest

from hf_smallllm.demo import DemoSettings, run_demo
from hf_smallllm_cli import main


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    summary = run_demo(DemoSettings(output_dir=str(tmp_path / "demo"), steps=6, snapshots=2, tokenizer_vocab=1024,
                                    new_tokens=8, progress=False), log=lambda *_: None)
    assert [step for _, step, _ in summary.snapshots] == [2, 4, 6]
    assert [tokens for _, _, tokens in summary.snapshots] == [2 * 4096, 4 * 4096, 6 * 4096]
    assert summary.reload_max_logit_diff == 0.0
    assert set(summary.generations) == {"en", "zh"}
    assert summary.generations["zh"].startswith("春风") and len(summary.generations["en"]) > len("ROMEO. What light")
    report = json.loads(summary.perplexity_json.read_text())
    assert len(report["models"]) == 2 and len(report["domains"]) == 5
    losses = [m["average_loss"] for m in report["models"].values()]
    assert losses[1] < losses[0]  # the final model beats the first snapshot
    assert summary.curves_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (summary.output_dir / "MODEL_CARD.md").read_text()
    assert "{{" not in card and "TODO" not in card and "step2-" in card
    metrics = [json.loads(line) for line in (summary.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/zh_poetry/loss" in record for record in metrics)


def test_demo_refuses_to_overwrite_and_checks_its_options(tmp_path, capsys):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("earlier output")
    assert main(["demo", "--output-dir", str(tmp_path / "old")]) == 2
    assert "already holds a demo; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "old" / "keep.txt").exists()
    assert main(["demo", "--output-dir", str(tmp_path / "new"), "--steps", "2"]) == 2
    assert "needs at least 4 steps" in capsys.readouterr().err
