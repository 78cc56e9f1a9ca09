"""Conversations to training examples: token ids with labels only on what the assistant says.

Labels come from the chat template's `{% generation %}` blocks (transformers' `return_assistant_tokens_mask`):
every token of an assistant reply, including its end-of-turn marker, is a target; system, user and role-marker
tokens are -100. This holds turn by turn in multi-turn conversations. Labels are aligned with `input_ids` (the
model shifts them), as in pretraining's packed rows.

Bad records are either fatal (`on_bad_sample="error"`: the first one raises with its origin) or skipped and counted
by reason (`"skip"`: `SampleReport` says how many and shows the first few); never dropped silently.
The examples go to TRL's SFTTrainer as they are (`input_ids`, `labels`); TRL packs them when the recipe asks
(best-fit decreasing into rows of `data.seq_len`, positions restarting at 0 per example, so the model attends only
within an example).
"""

import logging
from collections import Counter
from dataclasses import dataclass, field

from ..data.packing import IGNORE_INDEX
from ..errors import UsageValueError
from .records import RecordSource, SampleError, to_messages

logger = logging.getLogger(__name__)
BAD_SAMPLE_POLICIES = ("skip", "error")


@dataclass
class SampleReport:
    """How many records were read, kept and skipped (by reason), with the first few skipped ones named."""

    read: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # "origin: reason: detail" of the first skipped records
    max_examples: int = 5

    def skip(self, origin: str, error: SampleError) -> None:
        self.skipped[error.reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(f"{origin}: {error}")

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        text = f"{self.kept} of {self.read} records kept"
        if self.skipped:
            reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(self.skipped.items()))
            text += f"; skipped {self.total_skipped} ({reasons}); first: " + " | ".join(self.examples)
        return text

    def to_dict(self) -> dict:
        return {"read": self.read, "kept": self.kept, "skipped": dict(self.skipped), "examples": self.examples}


def encode_conversation(tokenizer, messages: list[dict], max_length: int | None = None) -> dict:
    """`{"input_ids", "labels"}` of one conversation through the tokenizer's chat template; SampleError when the
    sample is longer than `max_length` or the template marks no assistant token."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; install one with install_chat_template()")
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    ids = list(encoded["input_ids"])
    mask = list(encoded["assistant_masks"])
    if max_length is not None and len(ids) > max_length:
        raise SampleError("too_long", f"{len(ids)} tokens > max_length {max_length}")
    if not any(mask):
        raise SampleError("no_assistant", "the chat template marks no assistant token in this sample")
    labels = [token if keep else IGNORE_INDEX for token, keep in zip(ids, mask, strict=True)]
    return {"input_ids": ids, "labels": labels}


def build_examples(sources: list[RecordSource], tokenizer, max_length: int, on_bad_sample: str = "skip",
                   progress: bool = False) -> tuple[list[dict], SampleReport]:
    """Every usable example of `sources`, in order, and the report of what was skipped."""
    if on_bad_sample not in BAD_SAMPLE_POLICIES:
        raise ValueError(f"on_bad_sample={on_bad_sample!r}; choose one of {BAD_SAMPLE_POLICIES}")
    report = SampleReport()
    examples = []
    records = ((source, origin, record) for source in sources for origin, record in source.iter_records())
    if progress:
        from tqdm.auto import tqdm

        records = tqdm(records, desc="building SFT examples", unit="sample")
    for source, origin, record in records:
        report.read += 1
        try:
            messages = to_messages(record, source.format, source.messages_field)
            example = encode_conversation(tokenizer, messages, max_length)
        except SampleError as err:
            if on_bad_sample == "error":
                raise SampleError(err.reason, f"{origin}: {err.detail} (set data.on_bad_sample: skip to skip and "
                                  "count such records)") from None
            report.skip(origin, err)
            continue
        example["source"] = source.name
        examples.append(example)
        report.kept += 1
    if report.skipped:
        logger.warning("SFT data: %s", report.summary())
    if not examples:
        raise UsageValueError(f"no usable SFT examples: {report.summary()}")
    return examples, report


__all__ = ["BAD_SAMPLE_POLICIES", "SampleReport", "build_examples", "encode_conversation"]
