"""Records to examples: loss only on assistant tokens, bad samples reported and skipped by count or fatal, the
instruction/input/output shape, Parquet input, and SFT packing with per-sample positions."""

import json

import pytest
import torch

from hf_smallllm.data.packing import IGNORE_INDEX
from hf_smallllm.sft import (
    RecordSource,
    SampleError,
    build_examples,
    encode_conversation,
    install_chat_template,
    to_messages,
)

GOOD = {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi."}]}
BAD = {
    "empty_assistant": {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": " "}]},
    "unknown_role": {"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]},
    "no_assistant": {"messages": [{"role": "user", "content": "Say hi."}]},
    "misplaced_system": {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"},
                                      {"role": "assistant", "content": "c"}]},
    "too_long": {"messages": [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "ok"}]},
}


def write_jsonl(path, records, extra_lines=()):
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return path


@pytest.fixture
def chat_tokenizer(tokenizer):
    install_chat_template(tokenizer, "generic")
    return tokenizer


def test_bad_samples_are_skipped_and_counted(chat_tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [GOOD, *BAD.values(), GOOD], extra_lines=["{not json"])
    examples, report = build_examples([RecordSource("mixed", [str(path)])], chat_tokenizer, max_length=64)
    assert len(examples) == report.kept == 2
    assert report.read == 8
    assert dict(report.skipped) == {"empty_assistant": 1, "unknown_role": 1, "no_assistant": 1,
                                    "misplaced_system": 1, "too_long": 1, "malformed": 1}
    assert "mixed.jsonl:3: unknown_role" in report.summary()


@pytest.mark.parametrize("reason", sorted(BAD))
def test_bad_sample_is_an_error_when_asked(reason, chat_tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, BAD[reason]])
    with pytest.raises(SampleError, match=f"bad.jsonl:2: .*|{reason}") as info:
        build_examples([RecordSource("bad", [str(path)])], chat_tokenizer, 64, on_bad_sample="error")
    assert info.value.reason == reason and "bad.jsonl:2" in str(info.value)


def test_only_bad_samples_is_an_error(chat_tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [BAD["empty_assistant"]])
    with pytest.raises(ValueError, match="no usable SFT examples.*empty_assistant 1"):
        build_examples([RecordSource("bad", [str(path)])], chat_tokenizer, 64)


def test_instruction_records_become_conversations():
    messages = to_messages({"instruction": "Add.", "input": "2 and 3", "output": "5", "system": "Be brief."})
    assert messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add.\n\n2 and 3"},
                        {"role": "assistant", "content": "5"}]
    assert to_messages({"instruction": "Say hi.", "output": "hi"})[0] == {"role": "user", "content": "Say hi."}
    with pytest.raises(SampleError, match="empty_assistant"):
        to_messages({"instruction": "Say hi.", "output": ""})
    with pytest.raises(SampleError, match="malformed"):
        to_messages(["not", "a", "record"])


def test_multi_turn_labels_cover_exactly_the_replies(chat_tokenizer):
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b c"},
                {"role": "user", "content": "d"}, {"role": "assistant", "content": "e"}]
    example = encode_conversation(chat_tokenizer, messages)
    targets = [token for token, label in zip(example["input_ids"], example["labels"], strict=True)
               if label != IGNORE_INDEX]
    assert chat_tokenizer.decode(targets) == "b c</s>e</s>"
    assert example["labels"][0] == IGNORE_INDEX


def test_bundled_sets_and_parquet(chat_tokenizer, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    sources = [RecordSource("chat", ["bundled:instructions.jsonl"], format="messages", limit=50),
               RecordSource("alpaca", ["bundled:instructions_alpaca.jsonl"], format="instruction", limit=10)]
    examples, report = build_examples(sources, chat_tokenizer, 256)
    assert report.kept == 60 and not report.skipped
    assert any("\u4e00" <= ch <= "\u9fff" for e in examples for ch in chat_tokenizer.decode(e["input_ids"]))
    pq.write_table(pa.Table.from_pylist([GOOD, GOOD]), tmp_path / "chat.parquet")
    examples, _ = build_examples([RecordSource("pq", [str(tmp_path / "chat.parquet")])], chat_tokenizer, 64)
    assert len(examples) == 2
    from datasets import Dataset

    in_memory = Dataset.from_list([{"instruction": "Say hi.", "input": "", "output": "hi"}] * 3)
    examples, _ = build_examples([RecordSource("ds", dataset=in_memory)], chat_tokenizer, 64)
    assert len(examples) == 3
    with pytest.raises(FileNotFoundError, match="no bundled SFT file"):
        RecordSource("x", ["bundled:nope.jsonl"]).files()


def _trl_packed_batch(examples, seq_len, pad_token_id):
    """Examples packed and collated the way SFTTrainer does with `data.packing` (BFD rows, padding-free batch)."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = pack_dataset(Dataset.from_list([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples]),
                        seq_len, "bfd")
    return list(rows), DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=True)(list(rows))


def test_trl_packing_keeps_samples_whole_with_restarting_positions(chat_tokenizer):
    examples = [encode_conversation(chat_tokenizer, [{"role": "user", "content": "q" * n},
                                                     {"role": "assistant", "content": "a"}]) for n in (1, 5, 9, 3)]
    lengths = [len(e["input_ids"]) for e in examples]
    rows, batch = _trl_packed_batch(examples, sum(lengths[:2]), chat_tokenizer.pad_token_id)
    assert sorted(n for r in rows for n in r["seq_lengths"]) == sorted(lengths)  # every sample whole, none cut
    assert batch["input_ids"].shape == (1, sum(lengths))
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert len(starts) == len(examples)  # positions restart at every sample
    assert (batch["labels"] != IGNORE_INDEX).sum() == sum((torch.tensor(e["labels"]) != IGNORE_INDEX).sum()
                                                          for e in examples)


def test_packed_loss_equals_separate_samples(chat_tokenizer):
    """Packing changes nothing the model sees: the logits of a packed padding-free row equal the samples' own."""
    from .conftest import tiny_model

    model = tiny_model("tinyllama", chat_tokenizer).eval()
    examples = [encode_conversation(chat_tokenizer, [{"role": "user", "content": f"question {i}"},
                                                     {"role": "assistant", "content": f"answer {i} " * i}])
                for i in (1, 2, 3)]
    rows, batch = _trl_packed_batch(examples, 10_000, chat_tokenizer.pad_token_id)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        by_sample = {tuple(e["input_ids"]): model(input_ids=torch.tensor([e["input_ids"]])).logits for e in examples}
    offset = 0
    for length in rows[0]["seq_lengths"]:
        ids = tuple(batch["input_ids"][0, offset:offset + length].tolist())
        assert torch.allclose(packed[:, offset:offset + length], by_sample[ids], atol=1e-4)
        offset += length


SFT_FILES = {  # issue 31: each was a traceback
    "latin-1 jsonl": ("data.jsonl", json.dumps(GOOD, ensure_ascii=False).replace("}", ', "note": "caf\u00e9"}')
                      .encode("latin-1"), "not UTF-8 text"),
    "object in a .json": ("data.json", json.dumps(GOOD).encode(), "must hold a list of records, not a dict"),
    "invalid .json": ("data.json", b'[{"messages": ', "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(SFT_FILES))
def test_unreadable_sft_files_are_usage_errors_naming_the_file(case, chat_tokenizer, tmp_path):
    from hf_smallllm.errors import UsageError

    name, data, message = SFT_FILES[case]
    (tmp_path / name).write_bytes(data)
    with pytest.raises(UsageError, match=message) as info:
        build_examples([RecordSource("s", [str(tmp_path / name)])], chat_tokenizer, 64)
    assert name in str(info.value)


def test_a_folder_as_a_source_and_no_usable_record_are_usage_errors(chat_tokenizer, tmp_path):
    from hf_smallllm.errors import UsageError

    (tmp_path / "folder").mkdir()
    with pytest.raises(UsageError, match="is a folder; name its files"):
        build_examples([RecordSource("s", [str(tmp_path / "folder")])], chat_tokenizer, 64)
    path = write_jsonl(tmp_path / "bad.jsonl", [BAD["empty_assistant"]])
    with pytest.raises(UsageError, match="no usable SFT examples"):
        build_examples([RecordSource("bad", [str(path)])], chat_tokenizer, 64)
    with pytest.raises(UsageError, match="bad.jsonl:1"):  # on_bad_sample: error, a one-line error too
        build_examples([RecordSource("bad", [str(path)])], chat_tokenizer, 64, on_bad_sample="error")
