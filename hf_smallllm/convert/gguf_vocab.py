"""A tokenizer as llama.cpp's GGUF metadata describes it (`tokenizer.ggml.*`), and the check that llama.cpp will
tokenize like the source tokenizer.

llama.cpp knows two tokenizer kinds these families use:

- `llama` (SentencePiece BPE): tokens, one score per token and token types; llama.cpp merges the adjacent pair whose
  concatenation has the highest score, with `<0xNN>` byte fallback, after replacing spaces by `▁` and prepending one
  `▁` (`add_space_prefix`). Scores are the SentencePiece scores when a `tokenizer.model` is present, otherwise
  `-rank` of the BPE merge that creates the token, so that the score order is the merge order; tokens that are runs
  of `▁` come after all others when the tokenizer was trained here with a word split before BPE (one leading `▁` per
  word, whitespace runs apart), which llama.cpp does not apply: that reproduces the split except for runs of spaces
  before a character that has no `▁`-prefixed token (measured: 37 of 168 300-character chunks of English, Chinese
  and Python text differ for a 1,200-entry GEB-style tokenizer). Published SentencePiece models have no such split
  and tokenize identically.
- `gpt2` (byte-level BPE): tokens, merges, token types and a named pre-tokenizer (`tokenizer.ggml.pre`) whose split
  rules are compiled into llama.cpp. The name is found by behaviour, as llama.cpp's own converter does with its
  hash of a probe text: the vocabulary is re-run under each split rule this package knows ("deepseek-llm", "gpt-2")
  and the one that encodes `PROBE_TEXT` exactly like the source tokenizer is named. No match is refused.

Both kinds are then checked the same way before anything is written: a `tokenizers` pipeline built only from what
the GGUF will hold (what llama.cpp sees) must encode `PROBE_TEXT` to the same ids as the source tokenizer.
Token types (gguf.TokenType): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused (padding rows), 6 byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageValueError
from ..tokenization.alignment import special_token_behaviour
from ..tokenization.pipelines import byte_level_pre_tokenizer, sentencepiece_decoder, sentencepiece_normalizer

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# English, Chinese, digits, whitespace runs, code, punctuation and a character outside most vocabularies: the text
# the pre-tokenizer detection and the tokenization check encode (and the bilingual text the llama.cpp tests use).
PROBE_TEXT = (
    "Hello world! The year 2023 cost $12,345.67 -- isn't it?\n\n"
    "  def square(x):\n\treturn x ** 2  # 平方\n"
    "你好，世界！今天天气很好。我们在2024年学习大语言模型。\n"
    "Ünïcödé naïve café   three   spaces 🙂 end."
)

# llama.cpp pre-tokenizer name -> this package's byte-level split rules of the same behaviour
BYTE_LEVEL_PRE_TOKENIZERS = {"deepseek-llm": "deepseek", "gpt-2": "gpt2"}


class TokenizerExportError(UsageValueError):
    """The tokenizer cannot be written so that llama.cpp tokenizes like it."""


@dataclass
class GGUFVocab:
    """Everything `tokenizer.ggml.*` holds for one tokenizer, padded to the model's embedding rows."""

    model: str  # "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None = None  # llama only
    merges: list[str] | None = None  # gpt2 only
    pre: str | None = None  # gpt2 only: llama.cpp's pre-tokenizer name
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    unk_token_id: int | None = None
    pad_token_id: int | None = None
    add_bos_token: bool = False
    add_eos_token: bool = False
    add_space_prefix: bool | None = None  # llama only
    chat_template: str | None = None
    padding_rows: int = 0  # unused `[PADn]` entries appended up to the embedding size
    notes: list[str] = field(default_factory=list)

    def write(self, writer) -> None:
        writer.add_tokenizer_model(self.model)
        if self.pre is not None:
            writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        writer.add_token_types(self.token_types)
        if self.merges is not None:
            writer.add_token_merges(self.merges)
        for name in ("bos", "eos", "unk", "pad"):
            value = getattr(self, f"{name}_token_id")
            if value is not None:
                getattr(writer, f"add_{name}_token_id")(value)
        writer.add_add_bos_token(self.add_bos_token)
        writer.add_add_eos_token(self.add_eos_token)
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def _backend_state(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TokenizerExportError(f"{type(tokenizer).__name__} has no `tokenizers` backend (tokenizer.json); GGUF "
                                   "export needs a fast tokenizer")
    return json.loads(backend.to_str())


def _walk(component) -> list[dict]:
    """A normalizer / pre-tokenizer JSON flattened into its steps."""
    if not component:
        return []
    steps = []
    for key in ("normalizers", "pretokenizers"):
        if key in component:
            for child in component[key]:
                steps.extend(_walk(child))
            return steps
    return [component]


def _is_sentencepiece(state: dict) -> bool:
    steps = _walk(state.get("normalizer")) + _walk(state.get("pre_tokenizer"))
    marks = any(step.get("type") == "Metaspace" or (step.get("type") == "Prepend" and step.get("prepend") == "▁")
                for step in steps)
    return marks or bool(state["model"].get("byte_fallback"))


def _is_byte_level(state: dict) -> bool:
    return any(step.get("type") == "ByteLevel" for step in _walk(state.get("pre_tokenizer")))


def _merges(state: dict) -> list[tuple[str, str]]:
    merges = state["model"].get("merges") or []
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]


def _tokens_by_id(tokenizer) -> list[str]:
    vocab = tokenizer.get_vocab()
    tokens: list[str | None] = [None] * (max(vocab.values()) + 1)
    for token, index in vocab.items():
        tokens[index] = token
    holes = [i for i, t in enumerate(tokens) if t is None]
    if holes:
        raise TokenizerExportError(f"the tokenizer has no token for ids {holes[:10]}; GGUF needs one token per id")
    return tokens  # type: ignore[return-value]


def _added(tokenizer) -> dict[int, bool]:
    """id -> special, for the tokenizer's added tokens."""
    return {index: bool(token.special) for index, token in tokenizer.added_tokens_decoder.items()}


def _sentencepiece_scores(folder: Path | None, tokens: list[str]) -> tuple[list[float], list[int]] | None:
    """Scores and types from a SentencePiece `tokenizer.model` next to the tokenizer, when its pieces are the tokens."""
    if folder is None or not (folder / "tokenizer.model").is_file():
        return None
    try:
        import sentencepiece
    except ImportError:
        return None
    processor = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    if processor.get_piece_size() > len(tokens) or any(
            processor.id_to_piece(i) != tokens[i] for i in range(processor.get_piece_size())):
        return None
    scores, types = [], []
    for i in range(processor.get_piece_size()):
        scores.append(processor.get_score(i))
        types.append(UNKNOWN if processor.is_unknown(i) else CONTROL if processor.is_control(i)
                     else UNUSED if processor.is_unused(i) else BYTE if processor.is_byte(i) else NORMAL)
    return scores, types


def _llama_view(vocab: GGUFVocab):
    """A `tokenizers` pipeline that tokenizes the way llama.cpp's SentencePiece tokenizer does with `vocab`."""
    from tokenizers import AddedToken, Tokenizer, models
    from transformers.convert_slow_tokenizer import generate_merges

    real = {t: i for i, t in enumerate(vocab.tokens) if vocab.token_types[i] != UNUSED}
    scores = {t: vocab.scores[i] for t, i in real.items()}
    merges = generate_merges(real, scores)
    unk = vocab.tokens[vocab.unk_token_id] if vocab.unk_token_id is not None else None
    model = models.BPE(vocab=real, merges=merges, unk_token=unk, byte_fallback=True, fuse_unk=True)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = sentencepiece_normalizer() if vocab.add_space_prefix else None
    tokenizer.decoder = sentencepiece_decoder()
    tokenizer.add_tokens([AddedToken(vocab.tokens[i], special=kind == CONTROL, normalized=False)
                          for i, kind in enumerate(vocab.token_types) if kind in (CONTROL, USER_DEFINED)])
    return tokenizer


def _gpt2_view(tokens: list[str], types: list[int], merges: list[tuple[str, str]], style: str):
    from tokenizers import AddedToken, Tokenizer, decoders, models

    real = {t: i for i, t in enumerate(tokens) if types[i] != UNUSED}
    tokenizer = Tokenizer(models.BPE(vocab=real, merges=merges))
    tokenizer.pre_tokenizer = byte_level_pre_tokenizer(style)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_tokens([AddedToken(tokens[i], special=kind == CONTROL, normalized=False)
                          for i, kind in enumerate(types) if kind in (CONTROL, USER_DEFINED)])
    return tokenizer


def _source_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def gguf_vocab(tokenizer, vocab_size: int, folder: Path | None = None, probe: str = PROBE_TEXT) -> GGUFVocab:
    """The GGUF description of `tokenizer` for a model with `vocab_size` embedding rows; `folder` is where the
    tokenizer files are (a SentencePiece `tokenizer.model` there supplies the real scores). Raises
    `TokenizerExportError` when llama.cpp could not tokenize like `tokenizer`."""
    state = _backend_state(tokenizer)
    if state["model"].get("type") != "BPE":
        raise TokenizerExportError(f"tokenizer model {state['model'].get('type')!r}: GGUF export supports BPE "
                                   "tokenizers (SentencePiece BPE as llama.cpp's `llama`, byte-level as `gpt2`)")
    tokens = _tokens_by_id(tokenizer)
    if len(tokens) > vocab_size:
        raise TokenizerExportError(f"the tokenizer has {len(tokens):,} tokens but the model has {vocab_size:,} "
                                   "embedding rows (config.vocab_size)")
    added = _added(tokenizer)
    merges = _merges(state)
    unk_id = tokenizer.unk_token_id
    adds_bos, adds_eos = special_token_behaviour(tokenizer)
    common = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, unk_token_id=unk_id,
                  pad_token_id=tokenizer.pad_token_id, add_bos_token=adds_bos, add_eos_token=adds_eos,
                  chat_template=tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None)
    expected = _source_ids(tokenizer, probe)

    if _is_sentencepiece(state) and not _is_byte_level(state):
        types = [CONTROL if added.get(i) else USER_DEFINED if i in added else UNKNOWN if i == unk_id
                 else BYTE if len(t) == 6 and t.startswith("<0x") and t.endswith(">") else NORMAL
                 for i, t in enumerate(tokens)]
        from_model = _sentencepiece_scores(folder, tokens)
        if from_model is not None:
            scores = from_model[0] + [0.0] * (len(tokens) - len(from_model[0]))
            source = "SentencePiece scores from tokenizer.model"
        else:
            word_split = state.get("pre_tokenizer") is not None and not any(
                step.get("type") == "Metaspace" for step in _walk(state.get("pre_tokenizer")))
            scores = [-1e9] * len(tokens)  # tokens no merge creates are never the result of a merge
            index = {t: i for i, t in enumerate(tokens)}
            for rank, (left, right) in enumerate(merges):
                merged = index.get(left + right)
                if merged is not None and scores[merged] == -1e9:
                    scores[merged] = -float(rank)
            for i, kind in enumerate(types):
                if kind != NORMAL:
                    scores[i] = 0.0
                elif word_split and len(tokens[i]) > 1 and set(tokens[i]) == {"▁"} and scores[i] > -1e9:
                    # A tokenizer trained here cuts words (one leading ▁) from runs of ▁ before BPE; llama.cpp cuts
                    # nothing, so runs of ▁ merge only after every word merge, which reproduces that cut.
                    scores[i] -= 1e6
            source = "scores = -(BPE merge rank)"
            if word_split:
                source += ("; this tokenizer cuts words before BPE and llama.cpp does not: runs of ▁ merge last, "
                           "which reproduces the cut except for spaces before a character with no ▁-prefixed token "
                           "(e.g. three spaces before a backtick)")
        vocab = GGUFVocab("llama", tokens, types, scores=scores, add_space_prefix=True,
                          notes=[f"SentencePiece BPE ({source})"], **common)
        view = _llama_view(vocab)
        got = view.encode(probe, add_special_tokens=False).ids
    elif _is_byte_level(state):
        if not merges:  # the gguf writer drops (and cannot write) an empty array, and llama.cpp requires the key
            raise TokenizerExportError("a byte-level tokenizer without merges cannot be written for llama.cpp: its "
                                       "`gpt2` tokenizer needs tokenizer.ggml.merges, and GGUF has no empty arrays")
        types = [CONTROL if added.get(i) else USER_DEFINED if i in added else NORMAL for i in range(len(tokens))]
        got, pre = None, None
        for name, style in BYTE_LEVEL_PRE_TOKENIZERS.items():
            got = _gpt2_view(tokens, types, merges, style).encode(probe, add_special_tokens=False).ids
            if got == expected:
                pre = name
                break
        if pre is None:
            raise TokenizerExportError(
                "the tokenizer's byte-level pre-tokenizer behaves like none of llama.cpp's that this export knows "
                f"({', '.join(BYTE_LEVEL_PRE_TOKENIZERS)}): llama.cpp would split text differently")
        vocab = GGUFVocab("gpt2", tokens, types, merges=[f"{a} {b}" for a, b in merges], pre=pre,
                          notes=[f"byte-level BPE, llama.cpp pre-tokenizer {pre!r}"], **common)
    else:
        raise TokenizerExportError("the tokenizer is neither SentencePiece-style BPE (▁ for spaces, byte fallback) "
                                   "nor byte-level BPE; llama.cpp has no equivalent for it")
    if got != expected:
        first = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
                     min(len(got), len(expected)))
        raise TokenizerExportError(
            f"llama.cpp would tokenize differently ({vocab.model} vocabulary): the probe text gives {len(got)} "
            f"tokens instead of {len(expected)}, first difference at token {first} ({got[first:first + 3]} vs "
            f"{expected[first:first + 3]})")

    pad = vocab_size - len(tokens)
    if pad:
        vocab.tokens = tokens + [f"[PAD{i}]" for i in range(len(tokens), vocab_size)]
        vocab.token_types = types + [UNUSED] * pad
        if vocab.scores is not None:
            vocab.scores = vocab.scores + [-1e9] * pad
        vocab.padding_rows = pad
        vocab.notes.append(f"{pad} unused [PADn] entries fill the embedding's {vocab_size:,} rows")
    return vocab


__all__ = ["BYTE_LEVEL_PRE_TOKENIZERS", "GGUFVocab", "PROBE_TEXT", "TokenizerExportError", "gguf_vocab"]
