"""Packed sequences: several documents in one row, positions restarting at each, must behave exactly like the
documents run separately, for every family and CPU attention implementation, with one or several packed rows."""

import pytest
import torch

from hf_smallllm.models.modeling_smallllm import flash_varlen_kwargs_from_position_ids, position_ids_from_cu_seq_lens

from .helpers import ALL_FAMILIES, CPU_ATTENTION, random_ids, tiny_model

DOC_LENGTHS = [(5, 9, 3, 7), (11, 6, 7)]  # two rows of 24 tokens


def packed_batch(vocab_size: int):
    docs = [[random_ids(vocab_size, (n,)) for n in row] for row in DOC_LENGTHS]
    input_ids = torch.stack([torch.cat(row) for row in docs])
    position_ids = torch.stack([torch.cat([torch.arange(len(d)) for d in row]) for row in docs])
    labels = input_ids.clone()
    labels[position_ids == 0] = -100  # the first token of a document is not predicted from the previous document
    return docs, input_ids, position_ids, labels


@pytest.mark.parametrize("attn", CPU_ATTENTION)
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_packed_rows_equal_documents_run_separately(family, attn):
    model = tiny_model(family, attn)
    docs, input_ids, position_ids, labels = packed_batch(model.config.vocab_size)
    with torch.no_grad():
        # use_cache is left at its default (True): the package must still detect the packing
        packed = model(input_ids, position_ids=position_ids, labels=labels,
                       num_items_in_batch=torch.tensor(1))  # loss = summed token losses
        separate_loss = 0.0
        for row, row_docs in enumerate(docs):
            start = 0
            for doc in row_docs:
                out = model(doc[None], labels=doc[None], num_items_in_batch=torch.tensor(1))
                separate_loss += out.loss.item()
                torch.testing.assert_close(packed.logits[row, start : start + len(doc)], out.logits[0],
                                           atol=1e-5, rtol=1e-5)
                start += len(doc)
    assert packed.loss.item() == pytest.approx(separate_loss, rel=1e-5)


@pytest.mark.parametrize("family", ["tinyllama", "btlm"])
def test_cu_seq_lens_alone_packs_like_position_ids(family):
    model = tiny_model(family, "sdpa")
    lengths = torch.tensor(DOC_LENGTHS[0])
    input_ids = random_ids(model.config.vocab_size, (1, int(lengths.sum())))
    cu = torch.cat([torch.zeros(1, dtype=torch.int32), lengths.cumsum(0).to(torch.int32)])
    position_ids = torch.cat([torch.arange(n) for n in DOC_LENGTHS[0]])[None]
    with torch.no_grad():
        by_positions = model(input_ids, position_ids=position_ids).logits
        by_boundaries = model(input_ids, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=9, max_length_k=9).logits
    torch.testing.assert_close(by_boundaries, by_positions, atol=0, rtol=0)


def test_position_ids_from_cu_seq_lens():
    cu = torch.tensor([0, 3, 5, 9], dtype=torch.int32)
    assert position_ids_from_cu_seq_lens(cu, torch.Size([1, 9])).tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]


def test_flash_varlen_kwargs_split_documents_and_rows():
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 2], [3, 4, 0, 1, 2, 3]])  # row 2 starts mid-document
    kwargs = flash_varlen_kwargs_from_position_ids(position_ids)
    assert kwargs["cu_seq_lens_q"].tolist() == [0, 3, 6, 8, 12]
    assert kwargs["cu_seq_lens_q"].dtype == torch.int32
    assert kwargs["max_length_q"] == 4 and kwargs["cu_seq_lens_k"] is kwargs["cu_seq_lens_q"]


def test_monotonic_positions_keep_plain_causal_attention():
    """TinyLlama-style packing (positions not reset) must attend across documents."""
    model = tiny_model("tinyllama", "sdpa")
    ids = random_ids(model.config.vocab_size, (1, 16))
    with torch.no_grad():
        plain = model(ids).logits
        explicit = model(ids, position_ids=torch.arange(16)[None]).logits
    torch.testing.assert_close(plain, explicit, atol=0, rtol=0)


def test_packed_document_detection_runs_only_on_caller_positions(monkeypatch):
    """Positions the model makes itself (arange) cannot hold several documents: prefill and decoding skip the
    detection, which LlamaForCausalLM also skips (it creates its cache before the mask)."""
    import transformers.masking_utils as masking_utils

    calls = []
    detect = masking_utils.find_packed_sequence_indices
    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices", lambda p: calls.append(p) or detect(p))
    model = tiny_model("tinyllama")
    ids = random_ids(model.config.vocab_size, (1, 8))
    with torch.no_grad():
        model(ids)
        model(ids, use_cache=True)
        assert calls == []
        model(ids, position_ids=torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4]]))
    assert len(calls) == 1
