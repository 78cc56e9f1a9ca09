"""Passkey retrieval / needle-in-a-haystack: build prompts of exact token lengths with a number hidden at a chosen
depth, let the model generate greedily, and score whether it repeats the number.

The format follows the passkey test of Mohtashami & Jaggi (2023, "Landmark Attention", arXiv 2305.16300), used by
the long-context extension papers (position interpolation, YaRN, LongLoRA): an instruction, filler text, the line
"The pass key is N. Remember it. N is the pass key." at the chosen depth, more filler, and "What is the pass key?
The pass key is". The filler is either that paper's repeated sentences (`filler="repeat"`) or real bundled text
(`filler="corpus"`, a needle-in-a-haystack variant). Prompts are assembled from token ids, so the prompt has
exactly the requested number of tokens whatever the tokenizer; the depth is the fraction of the filler before the
needle (0 = right after the instruction, 1 = right before the question).
"""

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from ..resources import corpus_path

INSTRUCTION = ("There is an important piece of information hidden inside a lot of irrelevant text. "
               "Find it and memorize it. I will quiz you about it.\n")
REPEATED_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = " What is the pass key? The pass key is"
FILLERS = ("repeat", "corpus")


@dataclass
class PasskeySample:
    """One prompt: `input_ids` has exactly `context_tokens` ids; the model should continue with `answer`."""

    input_ids: list[int]
    answer: str
    context_tokens: int
    depth: float


@dataclass
class PasskeyResult:
    context_tokens: int
    depth: float
    answer: str
    generated: str
    correct: bool


@dataclass
class PasskeyReport:
    """Per-sample results and accuracy per (context length, depth) cell."""

    results: list[PasskeyResult] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return sum(r.correct for r in self.results) / len(self.results) if self.results else float("nan")

    def grid(self) -> dict[int, dict[float, float]]:
        """{context_tokens: {depth: accuracy}}."""
        return length_depth_means((r.context_tokens, r.depth, float(r.correct)) for r in self.results)

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy,
                "grid": {str(k): {str(d): a for d, a in row.items()} for k, row in self.grid().items()},
                "results": [asdict(r) for r in self.results]}

    def to_markdown(self) -> str:
        return length_depth_table(self.grid()) + (
            f"\n\noverall accuracy {self.accuracy:.3f} over {len(self.results)} prompts")


def length_depth_means(cells: Iterable[tuple[int, float, float]]) -> dict[int, dict[float, float]]:
    """{context length: {depth: mean value}} of (length, depth, value) results, both keys sorted."""
    grouped: dict[int, dict[float, list[float]]] = {}
    for length, depth, value in cells:
        grouped.setdefault(length, {}).setdefault(depth, []).append(value)
    return {length: {depth: sum(v) / len(v) for depth, v in sorted(row.items())}
            for length, row in sorted(grouped.items())}


def length_depth_table(grid: dict[int, dict[float, float]]) -> str:
    """A markdown table of a length x depth grid ("-" where a cell has no result)."""
    depths = sorted({d for row in grid.values() for d in row})
    lines = ["| tokens | " + " | ".join(f"depth {d:g}" for d in depths) + " |", "|---:|" + "---:|" * len(depths)]
    for length, row in grid.items():
        lines.append(f"| {length} | " + " | ".join(f"{row[d]:.2f}" if d in row else "-" for d in depths) + " |")
    return "\n".join(lines)


def filler_text(filler: str, min_chars: int) -> str:
    if filler == "repeat":
        return REPEATED_FILLER * (min_chars // len(REPEATED_FILLER) + 1)
    if filler == "corpus":  # real prose without numbers that could be mistaken for the key
        text = corpus_path("en_shakespeare.txt").read_text(encoding="utf-8")
        text = "".join(ch for ch in text if not ch.isdigit())
        return (text + "\n") * (min_chars // len(text) + 1)
    raise ValueError(f"filler={filler!r}; choose one of {FILLERS}")


def make_passkey_samples(
    tokenizer,
    context_lengths: Sequence[int],
    depths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    samples_per_cell: int = 1,
    filler: str = "repeat",
    key_digits: int = 5,
    seed: int = 0,
) -> list[PasskeySample]:
    """Prompts for every (context length, depth) cell, each with a fresh random key of `key_digits` digits."""
    for depth in depths:
        if not 0.0 <= depth <= 1.0:
            raise ValueError(f"depth={depth} must be in [0, 1]")
    if samples_per_cell < 1 or key_digits < 1:
        raise ValueError("samples_per_cell and key_digits must be positive")
    rng = random.Random(seed)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    prefix = ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + encode(INSTRUCTION)
    question = encode(QUESTION)
    longest = max(context_lengths)
    filler_ids = encode(filler_text(filler, min_chars=longest * 8))  # >= 1 char per token for any BPE
    samples = []
    for length in context_lengths:
        for depth in depths:
            for _ in range(samples_per_cell):
                key = str(rng.randrange(10 ** (key_digits - 1), 10 ** key_digits))
                needle = encode(NEEDLE.format(key=key))
                budget = length - len(prefix) - len(needle) - len(question)
                if budget < 0:
                    raise ValueError(f"context length {length} is shorter than the prompt without filler "
                                     f"({length - budget} tokens)")
                if budget > len(filler_ids):
                    raise ValueError(f"not enough filler for {length} tokens")
                before = round(depth * budget)
                ids = prefix + filler_ids[:before] + needle + filler_ids[before:budget] + question
                samples.append(PasskeySample(ids, key, length, float(depth)))
    return samples


def first_number(text: str) -> str:
    """The first run of digits in `text` ("" when there is none)."""
    match = re.search(r"\d+", text)
    return match.group(0) if match else ""


@torch.no_grad()
def score_passkey(model, tokenizer, samples: Sequence[PasskeySample], max_new_tokens: int | None = None,
                  progress: bool = True) -> PasskeyReport:
    """Greedy-generate after each prompt (with the KV cache) and count it correct when the first number in the
    continuation equals the key."""
    from ..eval.losses import model_device

    device = model_device(model)
    report = PasskeyReport()
    for sample in tqdm(samples, desc="passkey", disable=not progress):
        answer_tokens = len(tokenizer(" " + sample.answer, add_special_tokens=False)["input_ids"])
        input_ids = torch.tensor([sample.input_ids], device=device)
        output = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                max_new_tokens=max_new_tokens or answer_tokens + 2,
                                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                                else tokenizer.eos_token_id)
        generated = tokenizer.decode(output[0, input_ids.shape[1]:], skip_special_tokens=True)
        correct = first_number(generated) == sample.answer
        report.results.append(PasskeyResult(sample.context_tokens, sample.depth, sample.answer, generated, correct))
    return report


def plot_passkey_grid(report: PasskeyReport, output_path, title: str | None = None):
    """Accuracy heatmap (context length x depth) as a PNG, written atomically."""
    if not report.results:
        raise ValueError("the passkey report has no results to plot")
    return plot_length_depth_grid(report.grid(), output_path, title or f"passkey retrieval (accuracy "
                                  f"{report.accuracy:.2f})", "accuracy")


def plot_length_depth_grid(grid: dict[int, dict[float, float]], output_path, title: str, label: str = "score"):
    """The usual retrieval heat map: {context tokens: {depth: score in [0, 1]}} with lengths across and depths down,
    as a PNG, written atomically."""
    from matplotlib.figure import Figure

    from ..runfiles import atomic_path

    if not grid:
        raise ValueError("nothing to plot: the grid is empty")
    depths = sorted({d for row in grid.values() for d in row})
    lengths = list(grid)
    values = [[grid[length].get(d, float("nan")) for length in lengths] for d in depths]
    figure = Figure(figsize=(1.2 + 0.9 * len(lengths), 1.2 + 0.6 * len(depths)))
    axes = figure.add_subplot()
    image = axes.imshow(values, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
    axes.set_xticks(range(len(lengths)), [str(n) for n in lengths])
    axes.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
    axes.set_xlabel("context tokens")
    axes.set_ylabel("needle depth")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label=label)
    figure.tight_layout()
    with atomic_path(output_path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return output_path


__all__ = ["FILLERS", "PasskeyReport", "PasskeyResult", "PasskeySample", "first_number", "make_passkey_samples",
           "length_depth_means", "length_depth_table", "plot_length_depth_grid", "plot_passkey_grid", "score_passkey"]
