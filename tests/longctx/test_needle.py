"""Needle-in-a-haystack prompts have the exact length and depth asked for; the scorer measures answer recall and
draws the heat map; the CLI runs it offline on a tiny saved model."""

import json

import pytest
import torch

from hf_smallllm.longctx import make_needle_samples, plot_needle_grid, score_needle
from hf_smallllm.longctx.needle import ANSWER, answer_recall


def test_prompts_have_exact_length_and_needle_depth(corpus_tokenizer):
    samples = make_needle_samples(corpus_tokenizer, [160, 400], depths=(0.0, 0.5, 1.0))
    assert len(samples) == 6
    for sample in samples:
        assert len(sample.input_ids) == sample.context_tokens
        text = corpus_tokenizer.decode(sample.input_ids)
        needle, question = text.index("The best thing to do in San Francisco is eat"), text.rindex("\nWhat is")
        needle_end = text.index("sunny day.") + len("sunny day.")
        before, after = needle, question - needle_end
        assert abs(before / (before + after) - sample.depth) < 0.15, (sample.depth, before, after)
        assert text.endswith("The best thing to do in San Francisco is")
    with pytest.raises(ValueError, match="shorter than the needle"):
        make_needle_samples(corpus_tokenizer, [20])


def test_answer_recall():
    assert answer_recall(ANSWER, " eat a sandwich and sit in Dolores Park on a sunny day.") == 1.0
    assert answer_recall(ANSWER, " eat a sandwich.") == pytest.approx(3 / 11)
    assert answer_recall(ANSWER, " go home") == 0.0


class _Oracle(torch.nn.Module):
    """Repeats the answer after prompts of 160 tokens, half of it otherwise."""

    def __init__(self, tokenizer):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer = tokenizer

    def generate(self, input_ids, max_new_tokens, **kwargs):
        text = " " + ANSWER if input_ids.shape[1] == 160 else " eat a sandwich and sit"
        answer = self.tokenizer(text, add_special_tokens=False)["input_ids"][:max_new_tokens]
        return torch.cat([input_ids, torch.tensor([answer])], dim=1)


def test_scorer_grid_and_heat_map(corpus_tokenizer, tmp_path):
    samples = make_needle_samples(corpus_tokenizer, [160, 320], depths=(0.0, 1.0))
    report = score_needle(_Oracle(corpus_tokenizer), corpus_tokenizer, samples, progress=False)
    grid = report.grid()
    assert grid[160] == {0.0: 1.0, 1.0: 1.0}
    assert grid[320][0.0] == pytest.approx(5 / 11)
    assert "| 160 | 1.00 | 1.00 |" in report.to_markdown()
    json.dumps(report.to_dict())
    png = plot_needle_grid(report, tmp_path / "needle.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_cli_runs_on_a_tiny_model(corpus_tokenizer, tmp_path):
    from hf_smallllm import FAMILIES, preset_config
    from hf_smallllm_cli import main

    torch.manual_seed(0)
    model = FAMILIES["chuxin"].causal_lm_class(preset_config("chuxin", "tiny", vocab_size=len(corpus_tokenizer),
                                                             max_position_embeddings=512))
    model.save_pretrained(tmp_path / "model")
    corpus_tokenizer.save_pretrained(tmp_path / "model")
    out = tmp_path / "needle"
    assert main(["longctx", "needle", "--model", str(tmp_path / "model"), "--lengths", "128,256", "--depths", "0,1",
                 "--output-dir", str(out)]) == 0
    report = json.loads((out / "needle.json").read_text())
    assert set(report[str(tmp_path / "model")]["grid"]) == {"128", "256"}
    assert (out / "needle.png").stat().st_size > 0
