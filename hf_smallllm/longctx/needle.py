"""Needle in a haystack: a sentence of fact hidden at a chosen depth of real prose of exact token lengths, a question
about it at the end, and a score per (context length, depth) cell drawn as the usual heat map.

The format follows Kamradt's "needle in a haystack" test (2023, github.com/gkamradt/LLMTest_NeedleInAHaystack), the
picture long-context releases show: a needle sentence ("The best thing to do in San Francisco is ..."), a haystack
of unrelated prose (here the bundled Shakespeare, digits removed, instead of Paul Graham's essays), the question,
and the answer's start, so that a base model only has to continue it. Scoring is the share of the answer's words
that the greedy continuation reproduces (Kamradt had GPT-4 grade 1-10; word recall needs no second model and is 1.0
exactly when the answer is repeated). The numeric passkey (`passkey.py`) stays beside it: a number is an exact-match
target and is easier to find, a sentence in prose is the harder, more realistic probe.

Prompts are assembled from token ids like the passkey's, so every prompt has exactly the requested length; the
depth is the fraction of the haystack before the needle (0 = at the start, 1 = right before the question).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from .passkey import filler_text, length_depth_means, length_depth_table, plot_length_depth_grid

NEEDLE = " The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day. "
QUESTION = "\nWhat is the best thing to do in San Francisco? The best thing to do in San Francisco is"
ANSWER = "eat a sandwich and sit in Dolores Park on a sunny day"


@dataclass
class NeedleSample:
    """One prompt of exactly `context_tokens` ids; the model should continue with `answer`."""

    input_ids: list[int]
    answer: str
    context_tokens: int
    depth: float


@dataclass
class NeedleResult:
    context_tokens: int
    depth: float
    generated: str
    score: float


@dataclass
class NeedleReport:
    """Per-prompt results and the mean score per (context length, depth) cell."""

    results: list[NeedleResult] = field(default_factory=list)

    @property
    def score(self) -> float:
        return sum(r.score for r in self.results) / len(self.results) if self.results else float("nan")

    def grid(self) -> dict[int, dict[float, float]]:
        """{context_tokens: {depth: mean score}}."""
        return length_depth_means((r.context_tokens, r.depth, r.score) for r in self.results)

    def to_dict(self) -> dict:
        return {"score": self.score,
                "grid": {str(k): {str(d): s for d, s in row.items()} for k, row in self.grid().items()},
                "results": [asdict(r) for r in self.results]}

    def to_markdown(self) -> str:
        lines = [length_depth_table(self.grid())]
        lines.append(f"\nmean score {self.score:.3f} over {len(self.results)} prompts (answer words recovered)")
        return "\n".join(lines)


def make_needle_samples(tokenizer, context_lengths: Sequence[int],
                        depths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), needle: str = NEEDLE,
                        question: str = QUESTION, answer: str = ANSWER) -> list[NeedleSample]:
    """One prompt per (context length, depth): haystack prose with `needle` at the depth, then `question`."""
    for depth in depths:
        if not 0.0 <= depth <= 1.0:
            raise ValueError(f"depth={depth} must be in [0, 1]")
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    prefix = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    needle_ids, question_ids = encode(needle), encode(question)
    haystack = encode(filler_text("corpus", min_chars=max(context_lengths) * 8))
    samples = []
    for length in context_lengths:
        budget = length - len(prefix) - len(needle_ids) - len(question_ids)
        if budget < 0:
            raise ValueError(f"context length {length} is shorter than the needle and the question "
                             f"({length - budget} tokens)")
        if budget > len(haystack):
            raise ValueError(f"not enough haystack for {length} tokens")
        for depth in depths:
            before = round(depth * budget)
            ids = prefix + haystack[:before] + needle_ids + haystack[before:budget] + question_ids
            samples.append(NeedleSample(ids, answer, length, float(depth)))
    return samples


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def answer_recall(answer: str, generated: str) -> float:
    """Share of the answer's words (lower-cased, each counted once) found in the generated text."""
    wanted, got = set(_words(answer)), set(_words(generated))
    return len(wanted & got) / len(wanted) if wanted else 0.0


@torch.no_grad()
def score_needle(model, tokenizer, samples: Sequence[NeedleSample], max_new_tokens: int | None = None,
                 progress: bool = True) -> NeedleReport:
    """Greedy-generate after each prompt (KV cache) and score the continuation by `answer_recall`."""
    from ..eval.losses import model_device

    device = model_device(model)
    report = NeedleReport()
    for sample in tqdm(samples, desc="needle", disable=not progress):
        answer_tokens = len(tokenizer(" " + sample.answer, add_special_tokens=False)["input_ids"])
        input_ids = torch.tensor([sample.input_ids], device=device)
        output = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                max_new_tokens=max_new_tokens or answer_tokens + 4,
                                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                                else tokenizer.eos_token_id)
        generated = tokenizer.decode(output[0, input_ids.shape[1]:], skip_special_tokens=True)
        report.results.append(NeedleResult(sample.context_tokens, sample.depth, generated,
                                           answer_recall(sample.answer, generated)))
    return report


def plot_needle_grid(report: NeedleReport, output_path, title: str | None = None):
    """The needle-in-a-haystack heat map (context length x depth, mean score) as a PNG, written atomically."""
    if not report.results:
        raise ValueError("the needle report has no results to plot")
    return plot_length_depth_grid(report.grid(), output_path,
                                  title or f"needle in a haystack (score {report.score:.2f})", "answer recall")


__all__ = ["ANSWER", "NEEDLE", "QUESTION", "NeedleReport", "NeedleResult", "NeedleSample", "answer_recall",
           "make_needle_samples", "plot_needle_grid", "score_needle"]
