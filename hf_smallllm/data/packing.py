"""Tokenize documents and pack them into fixed-length rows, resumably.

Every document is tokenized without special tokens and ends with EOS (optionally begins with BOS); documents are
concatenated into rows of `seq_len` tokens. Each row carries `input_ids`, `labels` and `position_ids`:

- `document` packing (ChuXin / StableLM 2): positions restart at 0 at every document, so the model's
  packed-sequence handling restricts attention to the document (a block-diagonal causal mask; flash-attn's varlen
  path). The first token of a document gets label -100: nothing may be predicted across a document boundary, so the
  loss of a row equals the summed losses of its documents run on their own.
- `causal` packing (TinyLlama): positions run 0..seq_len-1 over the whole row and every token but the row's first
  is a target, so attention and prediction cross document boundaries.

A document longer than the space left in a row continues in the next row; in `document` mode the continuation is a
fresh segment (positions restart at 0). No token is dropped or duplicated: rows are the exact concatenation of the
tokenized documents, in order. When a source that does not cycle runs out, the unfinished last row follows the tail
policy: `drop` it, or `pad` it to full length (pad tokens are their own segment with label -100).

`DocumentPacker.state_dict()` captures where the packer stands (epoch, next document, tokens still pending), so a
checkpointed run resumes on exactly the next token.
"""

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from .documents import DocumentSource

PACKING_MODES = ("document", "causal")
TAIL_POLICIES = ("drop", "pad")
IGNORE_INDEX = -100


@dataclass
class PackedRow:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    source: str = ""
    padding: int = 0  # pad tokens at the end (tail policy "pad")


class SourceExhausted(Exception):
    """A non-cycling source has no documents left."""


class DocumentPacker:
    """Packs the documents of one `DocumentSource` into rows, cycling over the source in epochs if `cycle`."""

    def __init__(self, source: DocumentSource, tokenizer, mode: str = "document", add_bos: bool = False,
                 cycle: bool = True, tail: str = "drop", tokenize_batch: int = 64):
        if mode not in PACKING_MODES:
            raise ValueError(f"packing mode {mode!r}; choose one of {PACKING_MODES}")
        if tail not in TAIL_POLICIES:
            raise ValueError(f"tail policy {tail!r}; choose one of {TAIL_POLICIES}")
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; every document must end with one")
        if add_bos and tokenizer.bos_token_id is None:
            raise ValueError("add_bos=True but the tokenizer has no BOS token")
        self.source = source
        self.tokenizer = tokenizer
        self.mode = mode
        self.add_bos = add_bos
        self.cycle = cycle
        self.tail = tail
        self.tokenize_batch = tokenize_batch
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # position in the source
        self.epoch = 0
        self.next_document = 0  # index (within the epoch) of the next document to move into `pending`
        self.pending: list[int] = []  # tokens of the current document not yet placed in a row
        self.pending_starts_document = False
        self.documents_read = 0
        self._queue: deque[list[int]] = deque()  # tokenized look-ahead; derived state, rebuilt on resume
        self._documents: Iterator[str] | None = None
        self._exhausted = False

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "next_document": self.next_document, "pending": list(self.pending),
                "pending_starts_document": self.pending_starts_document, "documents_read": self.documents_read}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self.next_document = state["next_document"]
        self.pending = list(state["pending"])
        self.pending_starts_document = state["pending_starts_document"]
        self.documents_read = state.get("documents_read", 0)
        self._queue.clear()
        self._documents = None
        self._exhausted = False

    # ------------------------------------------------------------------ documents
    def _encode(self, texts: list[str]) -> list[list[int]]:
        # verbose=False: documents longer than the tokenizer's model_max_length are expected (they span rows)
        encoded = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        bos = [self.tokenizer.bos_token_id] if self.add_bos else []
        return [bos + ids + [self.tokenizer.eos_token_id] for ids in encoded]

    def _refill(self) -> None:
        if self._documents is None:
            # the queue holds documents next_document, next_document + 1, ... of the current epoch
            self._documents = self.source.iter_documents(start=self.next_document)
        texts = []
        for text in self._documents:
            texts.append(text)
            if len(texts) == self.tokenize_batch:
                break
        if texts:
            self._queue.extend(self._encode(texts))
            return
        if self.next_document == 0 and not self._queue:
            raise ValueError(f"source {self.source.name!r} has no documents")
        self._documents = None
        if not self.cycle:
            self._exhausted = True
            return
        self.epoch += 1
        self.next_document = 0

    def _next_document_tokens(self) -> list[int]:
        while not self._queue:
            if self._exhausted:
                raise SourceExhausted(self.source.name)
            self._refill()
        self.next_document += 1
        self.documents_read += 1
        return self._queue.popleft()

    # ------------------------------------------------------------------ rows
    def next_row(self, seq_len: int) -> PackedRow:
        """The next row of exactly `seq_len` tokens. Raises SourceExhausted when a non-cycling source ends (after
        returning a padded last row under the `pad` tail policy)."""
        if seq_len < 2:
            raise ValueError(f"seq_len={seq_len} must be at least 2")
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        while len(ids) < seq_len:
            if not self.pending:
                try:
                    self.pending = self._next_document_tokens()
                except SourceExhausted:
                    if self.tail == "pad" and ids:
                        return self._pad(ids, labels, positions, seq_len)
                    raise
                self.pending_starts_document = True
            take = self.pending[: seq_len - len(ids)]
            if self.mode == "document":
                segment_labels = list(take)
                if self.pending_starts_document or not ids:
                    segment_labels[0] = IGNORE_INDEX  # never predicted across a boundary
                labels.extend(segment_labels)
                positions.extend(range(len(take)))
            else:
                segment_labels = list(take)
                if not ids:  # a row's first token is never a target; saying so keeps token counts exact
                    segment_labels[0] = IGNORE_INDEX
                labels.extend(segment_labels)
                positions.extend(range(len(ids), len(ids) + len(take)))
            ids.extend(take)
            self.pending = self.pending[len(take):]
            self.pending_starts_document = False
        return PackedRow(ids, labels, positions, self.source.name)

    def _pad(self, ids, labels, positions, seq_len) -> PackedRow:
        padding = seq_len - len(ids)
        start = len(ids)
        ids = ids + [self.pad_token_id] * padding
        labels = labels + [IGNORE_INDEX] * padding
        if self.mode == "document":
            positions = positions + list(range(padding))
        else:
            positions = positions + list(range(start, seq_len))
        return PackedRow(ids, labels, positions, self.source.name, padding)

    def rows(self, seq_len: int) -> Iterator[PackedRow]:
        """All remaining rows (endless when cycling)."""
        while True:
            try:
                yield self.next_row(seq_len)
            except SourceExhausted:
                return


__all__ = ["DocumentPacker", "IGNORE_INDEX", "PACKING_MODES", "PackedRow", "SourceExhausted", "TAIL_POLICIES"]
