"""Benchmark contamination check as in Skywork-13B's report (section 5.2, Table 8).

A model's language-modelling loss is measured on question+answer samples from three sets of the same distribution:
a benchmark's train split (L_train), its test split (L_test) and a reference set the model cannot have seen
(L_ref; Skywork generated GSM8K-like problems with GPT-4, released as `Skywork/mock_gsm8k_test`). Then
- delta1 = L_test - L_ref: markedly negative means the test split is easier for the model than unseen text of the
  same kind, i.e. the test split (or text close to it) probably was in the training data;
- delta2 = L_test - L_train: markedly positive means the train split is easier than the test split, i.e. the model
  was probably trained on the train split or other in-domain data (scores are inflated, though not by test leakage).
Skywork-13B measured L_test 1.01, L_train 0.97, L_ref 1.00 (delta1 0.01, delta2 0.04); flagged models had delta2 of
0.21-0.61 and delta1 down to -0.51.

Each L is the pooled mean cross-entropy per predicted token over the set (every token but each sample's first, no
BOS), as Skywork's `eval/eval_loss.py` computes it. A delta is flagged when it passes `threshold` (nats/token,
default 0.1, between Skywork's clean and flagged values) and is also statistically clear: |delta| at least `min_z`
standard errors (delta method on the per-sample sums), so that a small set's noise is not read as contamination.
Works on any local JSON-lines file of records with question/answer fields, or with a `text` field.
"""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UsageFileNotFoundError
from .benchmark_data import read_jsonl
from .losses import DocumentLoss, document_losses

DEFAULT_TEMPLATE = "Question: {question}\nAnswer: {answer}"


def format_records(records: Sequence[dict], template: str | None = None, *, question_field: str = "question",
                   answer_field: str = "answer", text_field: str = "text", source: str = "records") -> list[str]:
    """One text per record: `template` filled with the record's fields. Without a template, records with both a
    question and an answer use `Question: ...\\nAnswer: ...`, and records with only a text field use it as is."""
    texts = []
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise ValueError(f"{source}:{number}: expected a JSON object, got {type(record).__name__}")
        if template is not None:
            try:
                texts.append(template.format(**record))
            except KeyError as err:
                raise ValueError(f"{source}:{number}: template field {err.args[0]!r} missing; record has "
                                 f"{sorted(record)}") from None
        elif question_field in record and answer_field in record:
            texts.append(DEFAULT_TEMPLATE.format(question=str(record[question_field]).strip(),
                                                 answer=str(record[answer_field]).strip()))
        elif text_field in record:
            texts.append(str(record[text_field]))
        else:
            raise ValueError(f"{source}:{number}: needs {question_field!r} and {answer_field!r} fields, or "
                             f"{text_field!r}; record has {sorted(record)}")
    if not texts:
        raise ValueError(f"{source}: no records")
    return texts


def load_qa_texts(path: str | Path, template: str | None = None, *, question_field: str = "question",
                  answer_field: str = "answer", text_field: str = "text", limit: int | None = None) -> list[str]:
    """The formatted samples of a JSON-lines file (first `limit` records when given)."""
    path = Path(path)
    if not path.is_file():
        raise UsageFileNotFoundError(f"no such file {str(path)!r}")
    try:
        records = read_jsonl(path)
    except ValueError as err:
        raise ValueError(f"{path}: not JSON lines ({err})") from None
    return format_records(records[:limit] if limit else records, template, question_field=question_field,
                          answer_field=answer_field, text_field=text_field, source=str(path))


@dataclass(frozen=True)
class SplitLoss:
    """The pooled loss of one set and its standard error."""

    samples: int
    tokens: int
    loss: float
    stderr: float

    @classmethod
    def from_losses(cls, losses: Sequence[DocumentLoss]) -> "SplitLoss":
        scored = [d for d in losses if d.predicted_tokens]
        if len(scored) < 2:
            raise ValueError("a set needs at least two samples of two or more tokens")
        tokens = sum(d.predicted_tokens for d in scored)
        loss = sum(d.nll for d in scored) / tokens
        # Delta method for a ratio of sums: Var(sum nll / sum n) ~ sum((nll_i - L n_i)^2) / (sum n)^2 * N/(N-1).
        n = len(scored)
        residual = sum((d.nll - loss * d.predicted_tokens) ** 2 for d in scored)
        stderr = math.sqrt(residual * n / (n - 1)) / tokens
        return cls(n, tokens, loss, stderr)


@dataclass(frozen=True)
class ContaminationReport:
    train: SplitLoss
    test: SplitLoss
    reference: SplitLoss
    delta1: float  # L_test - L_ref
    delta2: float  # L_test - L_train
    delta1_z: float  # delta1 in standard errors
    delta2_z: float
    test_leakage: bool  # delta1 markedly negative
    in_domain_training: bool  # delta2 markedly positive
    threshold: float
    min_z: float

    @property
    def interpretation(self) -> str:
        notes = []
        if self.test_leakage:
            notes.append(f"delta1 = {self.delta1:+.3f}: the test split is much easier for the model than unseen "
                         "reference data of the same kind, so the test split (or text close to it) was probably in "
                         "its training data; its scores on this benchmark are not trustworthy")
        if self.in_domain_training:
            notes.append(f"delta2 = {self.delta2:+.3f}: the train split is much easier than the test split, so the "
                         "model was probably trained on the train split or other in-domain data; benchmark scores "
                         "are inflated relative to models that were not")
        if not notes:
            notes.append(f"no sign of contamination: |delta1| = {abs(self.delta1):.3f} and delta2 = "
                         f"{self.delta2:+.3f} stay within {self.threshold} nats/token or within {self.min_z} "
                         "standard errors (Skywork-13B: delta1 0.01, delta2 0.04)")
        return "; ".join(notes) + "."

    @property
    def flagged(self) -> bool:
        return self.test_leakage or self.in_domain_training

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update({"L_train": self.train.loss, "L_test": self.test.loss, "L_ref": self.reference.loss,
                     "flagged": self.flagged, "interpretation": self.interpretation})
        return data

    def to_markdown(self) -> str:
        rows = [("L_train", self.train), ("L_test", self.test), ("L_ref", self.reference)]
        lines = ["| set | samples | tokens | loss | std. error |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {s.samples} | {s.tokens} | {s.loss:.4f} | {s.stderr:.4f} |" for name, s in rows]
        lines += ["", "| delta | value | z | flag |", "|---|---|---|---|",
                  f"| delta1 = L_test - L_ref | {self.delta1:+.4f} | {self.delta1_z:+.1f} | "
                  f"{'test leakage' if self.test_leakage else '-'} |",
                  f"| delta2 = L_test - L_train | {self.delta2:+.4f} | {self.delta2_z:+.1f} | "
                  f"{'in-domain training' if self.in_domain_training else '-'} |",
                  "", self.interpretation]
        return "\n".join(lines)


def compare_splits(train: SplitLoss, test: SplitLoss, reference: SplitLoss, *, threshold: float = 0.1,
                   min_z: float = 2.0) -> ContaminationReport:
    """The deltas, their z-scores and flags from three measured sets."""
    if threshold < 0 or min_z < 0:
        raise ValueError(f"threshold and min_z must be >= 0, got {threshold} and {min_z}")
    delta1 = test.loss - reference.loss
    delta2 = test.loss - train.loss
    z1 = delta1 / max(math.hypot(test.stderr, reference.stderr), 1e-12)
    z2 = delta2 / max(math.hypot(test.stderr, train.stderr), 1e-12)
    return ContaminationReport(
        train, test, reference, delta1, delta2, z1, z2,
        test_leakage=delta1 <= -threshold and z1 <= -min_z,
        in_domain_training=delta2 >= threshold and z2 >= min_z,
        threshold=threshold, min_z=min_z,
    )


def contamination_check(model, tokenizer, train: Sequence[str], test: Sequence[str], reference: Sequence[str], *,
                        threshold: float = 0.1, min_z: float = 2.0, batch_size: int = 8,
                        progress: bool = False) -> ContaminationReport:
    """Measure L_train, L_test and L_ref of `model` on three lists of formatted samples (see `load_qa_texts`) and
    compare them. Samples longer than the model's context are cut to it."""
    measured = {}
    for name, texts in (("train", train), ("test", test), ("reference", reference)):
        losses = document_losses(model, tokenizer, texts, batch_size=batch_size, overflow="truncate",
                                 progress=progress, desc=f"L_{name}")
        measured[name] = SplitLoss.from_losses(losses)
    return compare_splits(measured["train"], measured["test"], measured["reference"], threshold=threshold,
                          min_z=min_z)


__all__ = [
    "DEFAULT_TEMPLATE",
    "ContaminationReport",
    "SplitLoss",
    "compare_splits",
    "contamination_check",
    "format_records",
    "load_qa_texts",
]
