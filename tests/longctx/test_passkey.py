"""Passkey prompts have the exact length and depth asked for, and the scorer counts what the model generates."""

import json

import pytest
import torch

from hf_smallllm.longctx import make_passkey_samples, plot_passkey_grid, score_passkey
from hf_smallllm.longctx.passkey import first_number


@pytest.mark.parametrize("filler", ["repeat", "corpus"])
def test_prompts_have_exact_length_and_needle_depth(corpus_tokenizer, filler):
    samples = make_passkey_samples(corpus_tokenizer, [128, 300], depths=(0.0, 0.5, 1.0), samples_per_cell=2,
                                   filler=filler, seed=1)
    assert len(samples) == 2 * 3 * 2
    assert len({s.answer for s in samples}) > 1 and all(len(s.answer) == 5 for s in samples)
    for sample in samples:
        assert len(sample.input_ids) == sample.context_tokens
        text = corpus_tokenizer.decode(sample.input_ids)
        needle = text.index(f"The pass key is {sample.answer}.")
        question = text.rindex("What is the pass key?")
        instruction_end = text.index("quiz you about it.") + len("quiz you about it.")
        needle_end = text.index(f"{sample.answer} is the pass key.") + len(f"{sample.answer} is the pass key.")
        before, after = needle - instruction_end, question - needle_end  # filler characters either side
        relative = before / (before + after)
        assert abs(relative - sample.depth) < 0.15, (sample.depth, relative)
        assert text.endswith("The pass key is")
        assert sum(ch.isdigit() for ch in text) == 2 * len(sample.answer)  # only the key's digits


def test_too_short_a_context_is_rejected(corpus_tokenizer):
    with pytest.raises(ValueError, match="shorter than the prompt"):
        make_passkey_samples(corpus_tokenizer, [20])
    with pytest.raises(ValueError, match="depth"):
        make_passkey_samples(corpus_tokenizer, [200], depths=(1.5,))


class _Oracle(torch.nn.Module):
    """Generates the key for prompts of 128 tokens, a wrong number otherwise."""

    def __init__(self, tokenizer, samples):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer, self.keys = tokenizer, {tuple(s.input_ids): s.answer for s in samples}

    def generate(self, input_ids, max_new_tokens, **kwargs):
        key = self.keys[tuple(input_ids[0].tolist())] if input_ids.shape[1] == 128 else "12"
        answer = self.tokenizer(f" {key}.", add_special_tokens=False)["input_ids"][:max_new_tokens]
        return torch.cat([input_ids, torch.tensor([answer])], dim=1)


def test_scorer_counts_correct_answers(corpus_tokenizer, tmp_path):
    samples = make_passkey_samples(corpus_tokenizer, [128, 256], depths=(0.0, 1.0))
    report = score_passkey(_Oracle(corpus_tokenizer, samples), corpus_tokenizer, samples, progress=False)
    assert report.grid() == {128: {0.0: 1.0, 1.0: 1.0}, 256: {0.0: 0.0, 1.0: 0.0}}
    assert report.accuracy == 0.5
    assert "| 128 | 1.00 | 1.00 |" in report.to_markdown()
    json.dumps(report.to_dict())
    png = plot_passkey_grid(report, tmp_path / "grid.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_first_number():
    assert first_number(" 71432. Remember") == "71432"
    assert first_number(" is 7 1432") == "7"
    assert first_number(" none") == ""
