"""Preference data for DPO: records with a prompt, a chosen and a rejected reply, checked before TRL sees them.

A record is `{"prompt": ..., "chosen": ..., "rejected": ...}` (TRL's preference format): the prompt is a string
(one user turn) or a list of turns ending with a user turn; each reply is a string (one assistant turn) or a list
of assistant turns. Records come from the same sources as SFT records (`records.RecordSource`: JSONL/JSON/Parquet
files, `bundled:<name>` for files in `hf_smallllm/resources/sft/`, or a `datasets` dataset).

Each record becomes TRL's conversational form (lists of `{"role", "content"}`), which DPOTrainer renders with the
tokenizer's chat template. A record that is not a usable pair (malformed, unknown or misplaced roles, an empty
reply, chosen == rejected, longer than `max_length` tokens through the template) is an error or is skipped and
counted by reason in a `SampleReport`, under the same `on_bad_sample` policy as SFT data.
"""

from ..errors import UsageValueError
from .records import RecordSource, SampleError, to_messages
from .samples import BAD_SAMPLE_POLICIES, SampleReport

PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")


def _turns(value, role: str, name: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if not isinstance(value, list) or not value:
        raise SampleError("malformed", f"'{name}' must be a string or a non-empty list of turns")
    return value


def to_preference(record) -> dict:
    """The record as `{"prompt": [turns], "chosen": [turns], "rejected": [turns]}`, validated; raises SampleError."""
    if isinstance(record, SampleError):
        raise record
    if not isinstance(record, dict) or any(name not in record for name in PREFERENCE_FIELDS):
        raise SampleError("malformed", "a preference record needs 'prompt', 'chosen' and 'rejected'")
    prompt = _turns(record["prompt"], "user", "prompt")
    replies = {name: _turns(record[name], "assistant", name) for name in ("chosen", "rejected")}
    # the whole conversation through the SFT checks (roles, system placement, content types, non-empty replies)
    for name, reply in replies.items():
        if any(not isinstance(turn, dict) or turn.get("role") != "assistant" for turn in reply):
            raise SampleError("malformed", f"'{name}' must hold assistant turns only")
        to_messages({"messages": prompt + reply}, "messages")
    if prompt[-1].get("role") != "user":
        raise SampleError("malformed", "the prompt must end with a user turn")
    if replies["chosen"] == replies["rejected"]:
        raise SampleError("same_answer", "chosen and rejected are the same reply")
    return {"prompt": prompt, "chosen": replies["chosen"], "rejected": replies["rejected"]}


def _length(tokenizer, messages: list[dict]) -> int:
    return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def build_preferences(sources: list[RecordSource], tokenizer, max_length: int, on_bad_sample: str = "skip"
                      ) -> tuple[list[dict], SampleReport]:
    """Every usable preference pair of `sources`, in order, and the report of what was skipped."""
    if on_bad_sample not in BAD_SAMPLE_POLICIES:
        raise ValueError(f"on_bad_sample={on_bad_sample!r}; choose one of {BAD_SAMPLE_POLICIES}")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; install one with install_chat_template()")
    report = SampleReport()
    pairs = []
    for source in sources:
        for origin, record in source.iter_records():
            report.read += 1
            try:
                pair = to_preference(record)
                longest = max(_length(tokenizer, pair["prompt"] + pair[name]) for name in ("chosen", "rejected"))
                if longest > max_length:
                    raise SampleError("too_long", f"{longest} tokens > max_length {max_length}")
            except SampleError as err:
                if on_bad_sample == "error":
                    raise SampleError(err.reason, f"{origin}: {err.detail} (set data.on_bad_sample: skip to skip and "
                                      "count such records)") from None
                report.skip(origin, err)
                continue
            pairs.append(pair)
            report.kept += 1
    if not pairs:
        raise UsageValueError(f"no usable preference pairs: {report.summary()}")
    return pairs, report


__all__ = ["PREFERENCE_FIELDS", "build_preferences", "to_preference"]
