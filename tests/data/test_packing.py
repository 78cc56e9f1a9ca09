"""Packing real text: exact token accounting, per-document positions and labels, tail policies, exact resume."""

import pytest
import torch

from hf_smallllm import preset_config, FAMILIES
from hf_smallllm.data import IGNORE_INDEX, DocumentPacker, DocumentSource, PackedCollator, SourceExhausted


def kjv():
    return DocumentSource("kjv", "bundled:validation/en_kjv.txt", split_by="line")


def token_stream(source, tokenizer):
    return [t for doc in source.iter_documents() for t in tokenizer(doc, add_special_tokens=False)["input_ids"]
            + [tokenizer.eos_token_id]]


@pytest.mark.parametrize("tail", ["drop", "pad"])
def test_rows_are_the_exact_token_stream(corpus_tokenizer, tail):
    source = kjv()
    packer = DocumentPacker(source, corpus_tokenizer, cycle=False, tail=tail)
    rows = list(packer.rows(seq_len=128))
    assert all(len(r.input_ids) == 128 for r in rows)
    stream = token_stream(source, corpus_tokenizer)
    packed = [t for r in rows for t in r.input_ids[: 128 - r.padding]]
    if tail == "drop":
        assert packed == stream[: len(packed)] and len(stream) - len(packed) < 128  # only the unfinished tail goes
    else:
        assert packed == stream and rows[-1].padding > 0
        assert rows[-1].labels[-rows[-1].padding:] == [IGNORE_INDEX] * rows[-1].padding


def test_document_mode_resets_positions_and_masks_boundary_labels(corpus_tokenizer):
    packer = DocumentPacker(kjv(), corpus_tokenizer, mode="document")
    eos = corpus_tokenizer.eos_token_id
    for row in [packer.next_row(96) for _ in range(5)]:
        for i in range(1, 96):
            if row.position_ids[i] == 0:  # a new document (or segment) starts here
                assert row.labels[i] == IGNORE_INDEX
                assert row.input_ids[i - 1] == eos or i == 0
            else:
                assert row.position_ids[i] == row.position_ids[i - 1] + 1 and row.labels[i] == row.input_ids[i]


def test_causal_mode_keeps_monotonic_positions(corpus_tokenizer):
    row = DocumentPacker(kjv(), corpus_tokenizer, mode="causal").next_row(64)
    assert row.position_ids == list(range(64)) and row.labels[1:] == row.input_ids[1:] and row.labels[0] == -100


def test_long_documents_continue_in_the_next_row(corpus_tokenizer):
    plays = DocumentSource("plays", "bundled:validation/en_shakespeare.txt", split_by="heading")
    packer = DocumentPacker(plays, corpus_tokenizer, cycle=False)
    first, second = packer.next_row(64), packer.next_row(64)
    document = corpus_tokenizer(next(plays.iter_documents()), add_special_tokens=False)["input_ids"]
    assert first.input_ids + second.input_ids == document[:128]
    assert second.position_ids[0] == 0  # a continued document restarts as a segment


def test_packer_resumes_on_the_exact_next_token(corpus_tokenizer):
    reference = DocumentPacker(kjv(), corpus_tokenizer, tokenize_batch=7)
    rows = [reference.next_row(50) for _ in range(12)]
    packer = DocumentPacker(kjv(), corpus_tokenizer, tokenize_batch=7)
    for _ in range(5):
        packer.next_row(50)
    state = packer.state_dict()
    resumed = DocumentPacker(kjv(), corpus_tokenizer, tokenize_batch=3)
    resumed.load_state_dict(state)
    assert [r.input_ids for r in (resumed.next_row(50) for _ in range(7))] == [r.input_ids for r in rows[5:]]


def test_cycling_sources_repeat_in_epochs(corpus_tokenizer):
    source = DocumentSource("tiny", "bundled:validation/en_kjv.txt", split_by="file")
    packer = DocumentPacker(source, corpus_tokenizer)
    total = len(token_stream(source, corpus_tokenizer))
    for _ in range(total // 256 + 2):
        packer.next_row(256)
    assert packer.epoch == 1
    with pytest.raises(SourceExhausted):
        once = DocumentPacker(source, corpus_tokenizer, cycle=False)
        for _ in range(total // 256 + 2):
            once.next_row(256)


def test_packed_real_text_loss_equals_documents_alone(corpus_tokenizer):
    packer = DocumentPacker(kjv(), corpus_tokenizer)
    batch = PackedCollator()([packer.next_row(80) for _ in range(2)])
    config = preset_config("tinyllama", "tiny", vocab_size=len(corpus_tokenizer))
    model = FAMILIES["tinyllama"].causal_lm_class(config).eval()
    with torch.no_grad():
        packed = model(**batch, num_items_in_batch=torch.tensor(1)).loss.item()
        separate = 0.0
        for row in range(2):
            positions = batch["position_ids"][row].tolist()
            starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
            for a, b in zip(starts, starts[1:]):
                ids = batch["input_ids"][row, a:b][None]
                separate += model(ids, labels=ids, num_items_in_batch=torch.tensor(1)).loss.item()
    assert packed == pytest.approx(separate, rel=1e-5)


def test_packer_rejects_bad_settings(corpus_tokenizer):
    with pytest.raises(ValueError, match="packing mode 'zigzag'"):
        DocumentPacker(kjv(), corpus_tokenizer, mode="zigzag")
    with pytest.raises(ValueError, match="tail policy"):
        DocumentPacker(kjv(), corpus_tokenizer, tail="keep")
    with pytest.raises(ValueError, match="seq_len=1"):
        DocumentPacker(kjv(), corpus_tokenizer).next_row(1)
