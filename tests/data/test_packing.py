"""Packing real text: rows are the exact token stream, per-document positions and labels, epochs, resume."""

import itertools

import numpy as np
import pytest
import torch

from hf_smallllm import FAMILIES, preset_config
from hf_smallllm.data import IGNORE_INDEX, DocumentSource, OnTheFlyTokens, pack_rows


def kjv():
    return DocumentSource("kjv", "bundled:validation/en_kjv.txt", split_by="line")


def token_stream(source, tokenizer):
    return [t for doc in source.iter_documents() for t in tokenizer(doc, add_special_tokens=False)["input_ids"]
            + [tokenizer.eos_token_id]]


def rows_of(tokens, count, seq_len, start=0):
    ids = np.empty((count, seq_len), dtype=np.int64)
    for row in range(count):
        tokens.read_into(ids[row], start + row * seq_len)
    return ids


def test_rows_are_the_exact_token_stream(corpus_tokenizer):
    source = kjv()
    stream = token_stream(source, corpus_tokenizer)
    ids = rows_of(OnTheFlyTokens(source, corpus_tokenizer, tokenize_batch=7), len(stream) // 128, 128)
    assert ids.ravel().tolist() == stream[: ids.size]


def test_document_mode_resets_positions_after_every_eos_and_masks_boundary_labels(corpus_tokenizer):
    eos = corpus_tokenizer.eos_token_id
    batch = pack_rows(rows_of(OnTheFlyTokens(kjv(), corpus_tokenizer), 5, 96), "document", eos)
    for ids, labels, positions in zip(batch["input_ids"], batch["labels"], batch["position_ids"], strict=True):
        assert positions[0] == 0 and labels[0] == IGNORE_INDEX
        for i in range(1, 96):
            if ids[i - 1] == eos:  # a new document starts here
                assert positions[i] == 0 and labels[i] == IGNORE_INDEX
            else:
                assert positions[i] == positions[i - 1] + 1 and labels[i] == ids[i]


def test_causal_mode_keeps_monotonic_positions(corpus_tokenizer):
    batch = pack_rows(rows_of(OnTheFlyTokens(kjv(), corpus_tokenizer), 2, 64), "causal", corpus_tokenizer.eos_token_id)
    assert (batch["position_ids"] == np.arange(64)).all()
    assert (batch["labels"][:, 1:] == batch["input_ids"][:, 1:]).all() and (batch["labels"][:, 0] == -100).all()


def test_long_documents_continue_in_the_next_row(corpus_tokenizer):
    plays = DocumentSource("plays", "bundled:validation/en_shakespeare.txt", split_by="heading")
    batch = pack_rows(rows_of(OnTheFlyTokens(plays, corpus_tokenizer), 2, 64), "document",
                      corpus_tokenizer.eos_token_id)
    document = corpus_tokenizer(next(plays.iter_documents()), add_special_tokens=False)["input_ids"]
    assert batch["input_ids"].ravel().tolist() == document[:128]
    assert batch["position_ids"][1, 0] == 0  # a continued document restarts as a segment


def test_on_the_fly_tokens_resume_from_their_document_cursor(corpus_tokenizer):
    reference = rows_of(OnTheFlyTokens(kjv(), corpus_tokenizer, tokenize_batch=7), 12, 50)
    tokens = OnTheFlyTokens(kjv(), corpus_tokenizer, tokenize_batch=7)
    rows_of(tokens, 5, 50)
    tokens.release_before(5 * 50)
    state = tokens.state_dict()
    assert 0 < state["offset"] <= 250 and state["document"] > 0
    resumed = OnTheFlyTokens(kjv(), corpus_tokenizer, tokenize_batch=3)
    resumed.load_state_dict(state)
    assert (rows_of(resumed, 7, 50, start=250) == reference[5:]).all()
    with pytest.raises(RuntimeError, match="already passed"):
        resumed.read_into(np.empty(10, np.int64), 0)


def test_sources_repeat_in_epochs(corpus_tokenizer):
    source = DocumentSource("tiny", "bundled:validation/en_kjv.txt", split_by="file")
    stream = token_stream(source, corpus_tokenizer)
    tokens = OnTheFlyTokens(source, corpus_tokenizer)
    window = np.empty(200, np.int64)
    tokens.read_into(window, len(stream) - 100)  # straddles the end of epoch 0
    assert window.tolist() == stream[-100:] + stream[:100] and tokens.epoch == 1


def test_packed_real_text_loss_equals_documents_alone(corpus_tokenizer):
    arrays = pack_rows(rows_of(OnTheFlyTokens(kjv(), corpus_tokenizer), 2, 80), "document",
                       corpus_tokenizer.eos_token_id)
    batch = {key: torch.from_numpy(value) for key, value in arrays.items()}
    config = preset_config("tinyllama", "tiny", vocab_size=len(corpus_tokenizer))
    model = FAMILIES["tinyllama"].causal_lm_class(config).eval()
    with torch.no_grad():
        packed = model(**batch, num_items_in_batch=torch.tensor(1)).loss.item()
        separate = 0.0
        for row in range(2):
            positions = batch["position_ids"][row].tolist()
            starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
            for a, b in itertools.pairwise(starts):
                ids = batch["input_ids"][row, a:b][None]
                separate += model(ids, labels=ids, num_items_in_batch=torch.tensor(1)).loss.item()
    assert packed == pytest.approx(separate, rel=1e-5)


def test_bad_settings_are_refused(corpus_tokenizer):
    with pytest.raises(ValueError, match="packing mode 'zigzag'"):
        pack_rows(np.zeros((1, 8), np.int64), "zigzag", 2)
    with pytest.raises(ValueError, match="seq_len >= 2"):
        pack_rows(np.zeros((1, 1), np.int64), "document", 2)
    with pytest.raises(ValueError, match="add_bos=True"):
        corpus_tokenizer_without_bos = type("T", (), {"eos_token_id": 2, "bos_token_id": None})()
        OnTheFlyTokens(kjv(), corpus_tokenizer_without_bos, add_bos=True)
