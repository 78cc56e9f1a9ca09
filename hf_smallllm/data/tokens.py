"""A source's token stream, tokenized on the fly, and the one document encoder that preparation uses too.

`encode_documents` is the only place text becomes tokens for pretraining: no special tokens from the tokenizer's
post-processor, EOS after every document, BOS before it when asked. `hf-smallllm data prepare` and the on-the-fly
stream both call it, so prepared shards hold exactly the tokens the on-the-fly stream would have made.

`OnTheFlyTokens` reads one `DocumentSource` and serves windows `[start, start + n)` of its endless (epoch after epoch)
token stream; the stream releases what lies before the current step. It suits small corpora (the demo, tests): every
process tokenizes the source up to the rows it needs. Its position is a document cursor (epoch, document, token offset
of that document), so a checkpointed run re-tokenizes from that document only. `tokenizer_identity` is what a manifest
records to tell tokenizers apart.
"""

import hashlib
import json
from bisect import bisect_right
from collections.abc import Iterator

import numpy as np

from .documents import DocumentSource

# Parts of a tokenizer.json that cannot change the ids of `encode(text, add_special_tokens=False)`: left out of
# the fingerprint so that, e.g., a tokenizer saved with another truncation setting still matches.
_NOT_ENCODING = ("truncation", "padding", "post_processor", "decoder")


def encode_documents(tokenizer, texts: list[str], add_bos: bool = False) -> list[list[int]]:
    """Token ids of each document: `[BOS] + ids + [EOS]` (BOS only with `add_bos`)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # the Rust tokenizer directly: the same ids as tokenizer(texts), without BatchEncoding
        encoded = [encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=False)]
    else:
        # verbose=False: documents longer than the tokenizer's model_max_length are expected (they span rows)
        encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if add_bos else []
    eos = [tokenizer.eos_token_id]
    return [bos + ids + eos for ids in encoded]


def check_special_tokens(tokenizer, add_bos: bool) -> None:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; every document must end with one")
    if add_bos and tokenizer.bos_token_id is None:
        raise ValueError("add_bos=True but the tokenizer has no BOS token")


def tokenizer_identity(tokenizer) -> dict:
    """What a manifest records about the tokenizer: a fingerprint of everything that decides the ids (normalizer,
    pre-tokenizer, model, added tokens; or the vocabulary of a slow tokenizer), the vocabulary size and the
    special ids used in the stream."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        for key in _NOT_ENCODING:
            spec.pop(key, None)
        payload = json.dumps(spec, sort_keys=True, ensure_ascii=False)
    else:
        payload = type(tokenizer).__name__ + json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return {
        "sha256": hashlib.sha256(payload.encode("utf-8")).hexdigest(),
        "vocab_size": len(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "class": type(tokenizer).__name__,
        "name_or_path": str(getattr(tokenizer, "name_or_path", "") or ""),
    }


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocabularies up to 65,536 entries), uint32 otherwise."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


class OnTheFlyTokens:
    """The token stream of a `DocumentSource`, tokenized as windows are asked for (see the module docstring)."""

    holds_tokens = True  # keeps tokenized documents until `release_before`

    def __init__(self, source: DocumentSource, tokenizer, add_bos: bool = False, tokenize_batch: int = 64):
        check_special_tokens(tokenizer, add_bos)
        self.name = source.name
        self.source = source
        self.tokenizer = tokenizer
        self.add_bos = add_bos
        self.tokenize_batch = tokenize_batch
        self.vocab_size = len(tokenizer)
        self.epoch = 0
        self.next_document = 0  # the next document to tokenize, within `epoch`
        self.next_offset = 0  # where its tokens start in the stream
        # documents still needed, from index `_head` on: start offsets (sorted, for bisect) and (epoch, document,
        # tokens); a list with a moving head, so finding a window's first document is a binary search
        self._starts: list[int] = []
        self._documents: list[tuple[int, int, np.ndarray]] = []
        self._head = 0
        self._texts: Iterator[str] | None = None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """A document cursor at or before every token still to be read."""
        if self._head < len(self._documents):
            epoch, document, _ = self._documents[self._head]
            return {"epoch": epoch, "document": document, "offset": self._starts[self._head]}
        return {"epoch": self.epoch, "document": self.next_document, "offset": self.next_offset}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.next_document, self.next_offset = state["epoch"], state["document"], state["offset"]
        self._starts, self._documents, self._head = [], [], 0
        self._texts = None

    # ------------------------------------------------------------------ tokens
    def _tokenize_more(self) -> None:
        if self._texts is None:
            self._texts = self.source.iter_documents(start=self.next_document)
        texts = []
        for text in self._texts:
            texts.append(text)
            if len(texts) == self.tokenize_batch:
                break
        if not texts:
            if self.next_document == 0:
                raise ValueError(f"source {self.name!r} has no documents")
            self._texts = None
            self.epoch += 1
            self.next_document = 0
            return
        for ids in encode_documents(self.tokenizer, texts, self.add_bos):
            tokens = np.asarray(ids, dtype=np.int64)
            self._starts.append(self.next_offset)
            self._documents.append((self.epoch, self.next_document, tokens))
            self.next_offset += len(tokens)
            self.next_document += 1

    def read_into(self, out: np.ndarray, start: int) -> None:
        """Fill `out` with tokens `[start, start + len(out))` of the stream; windows must not move backwards."""
        end = start + len(out)
        first = self._starts[self._head] if self._head < len(self._starts) else self.next_offset
        if start < first:
            raise RuntimeError(f"source {self.name!r}: token {start} was already passed (the stream is at {first}); "
                               "on-the-fly sources are read forwards only")
        while self.next_offset < end:
            self._tokenize_more()
        index = bisect_right(self._starts, start, lo=self._head) - 1
        filled = 0
        while filled < len(out):
            doc_start, tokens = self._starts[index], self._documents[index][2]
            lo = start + filled - doc_start
            take = min(len(tokens) - lo, len(out) - filled)
            out[filled:filled + take] = tokens[lo:lo + take]
            filled += take
            index += 1

    def release_before(self, offset: int) -> None:
        """Forget documents that end before `offset`: no window will start before it again."""
        head = bisect_right(self._starts, offset, lo=self._head) - 1
        self._head = max(head, self._head)
        if self._head > 4096 and self._head * 2 > len(self._starts):  # compact now and then
            del self._starts[:self._head], self._documents[:self._head]
            self._head = 0


__all__ = ["OnTheFlyTokens", "check_special_tokens", "encode_documents", "token_dtype", "tokenizer_identity"]
