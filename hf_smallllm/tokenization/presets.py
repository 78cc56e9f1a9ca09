"""Tokenizer presets: which kind of tokenizer a family uses, its size, its special tokens and where their ids sit,
and whether BOS/EOS are added. The per-family values live in each family's record (`hf_smallllm/families/<name>.py`,
`tokenizer=`); this module owns their type and validation. Facts from docs/architectures.md (sources there).

Id layout. `vocab_size` is the number of entries BPE training produces (the *base* vocabulary); it includes the
`leading_special_tokens` (ids 0, 1, ...) and, for `sentencepiece_bpe`, the 256 `<0xNN>` byte tokens right after
them, exactly as in Llama-2 (`<unk>` 0, `<s>` 1, `</s>` 2, `<0x00>` 3 ... `<0xFF>` 258). The
`trailing_special_tokens` follow the base vocabulary, so `len(tokenizer) == vocab_size + len(trailing)`, as in the
real families:

| family    | kind / pre-tokenizer      | vocab_size | leading              | adds |
|-----------|---------------------------|-----------:|----------------------|------|
| chuxin    | byte_level / deepseek     | 100,000    | -                    | none |
| btlm      | byte_level / gpt2         | 50,256     | -                    | none |
| tinyllama | sentencepiece_bpe, digits | 32,000     | `<unk>` `<s>` `</s>` | BOS  |
| skywork   | sentencepiece_bpe, digits | 65,519     | `<unk>` `<s>` `</s>` | BOS  |
| geb       | sentencepiece_bpe, digits | 64,789     | `<unk>` `<s>` `</s>` | none |

and the trailing special tokens after the base vocabulary:

| family    | trailing (ids)                                         |
|-----------|--------------------------------------------------------|
| chuxin    | BOS `<｜begin▁of▁sentence｜>` 100000, EOS = PAD 100001 |
| btlm      | `<|endoftext|>` 50256 (BOS = EOS = UNK)                |
| tinyllama | -                                                      |
| skywork   | `[USER]` `[BOT]` `[SEP]` 65519-65521 (PAD = `<unk>` 0) |
| geb       | `[MASK]` ... `<eod>`, role markers 64789-64798         |

The model's embedding has at least `len(tokenizer)` rows (ChuXin 102,400, GEB 64,896 padded).

GEB's ids follow its own `tokenization_geb.py` (what of it is verified: `hf_smallllm/families/geb.py`); its
`[gMASK]<sop>` chat prefix is left to the chat template rather than added to every text.
"""

import copy
from dataclasses import dataclass, field, fields, replace

from ..families import FAMILIES
from .pipelines import BYTE_LEVEL_PRE_TOKENIZERS, KINDS


@dataclass
class TokenizerPreset:
    """Everything `train_tokenizer` needs to build one family's kind of tokenizer; any field can be overridden."""

    kind: str  # byte_level | sentencepiece_bpe
    vocab_size: int  # entries BPE training produces, incl. leading specials and byte tokens (see module docstring)
    pre_tokenizer: str | None = None  # byte_level only: gpt2 | deepseek
    split_digits: bool = False  # every digit its own token (deepseek always does)
    leading_special_tokens: list[str] = field(default_factory=list)  # ids 0, 1, ... before the learned entries
    trailing_special_tokens: list[str] = field(default_factory=list)  # ids vocab_size, vocab_size + 1, ...
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    unk_token: str | None = None
    add_bos_token: bool = False
    add_eos_token: bool = False
    model_max_length: int = 4096
    min_frequency: int = 2  # a pair must occur this often to be merged
    # sentencepiece_bpe: at most this share of vocab_size goes to single characters; rarer characters use byte
    # fallback (SentencePiece's character_coverage plays this role). Chinese-heavy vocabularies need more.
    alphabet_share: float = 0.125

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"tokenizer kind={self.kind!r}; choose one of {KINDS}")
        if self.kind == "byte_level" and self.pre_tokenizer not in BYTE_LEVEL_PRE_TOKENIZERS:
            raise ValueError(f"byte_level pre_tokenizer={self.pre_tokenizer!r}; "
                             f"choose one of {BYTE_LEVEL_PRE_TOKENIZERS}")
        if self.kind == "sentencepiece_bpe" and self.unk_token is None:
            raise ValueError("sentencepiece_bpe needs an unk_token (byte fallback replaces it, BPE still names one)")
        specials = self.leading_special_tokens + self.trailing_special_tokens
        if len(set(specials)) != len(specials):
            raise ValueError(f"special tokens appear twice: {specials}")
        for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
            token = getattr(self, name)
            if token is not None and token not in specials:
                raise ValueError(f"{name}={token!r} is not among the special tokens {specials}")
        if self.add_bos_token and self.bos_token is None:
            raise ValueError("add_bos_token=True needs a bos_token")
        if self.add_eos_token and self.eos_token is None:
            raise ValueError("add_eos_token=True needs an eos_token")
        if self.vocab_size < self.minimum_vocab_size:
            raise ValueError(f"vocab_size={self.vocab_size} is too small: the {self.kind} base alphabet and leading "
                             f"special tokens alone take {self.minimum_vocab_size} entries")
        if not 0 < self.alphabet_share <= 1:
            raise ValueError(f"alphabet_share={self.alphabet_share}; must be in (0, 1]")

    @property
    def minimum_vocab_size(self) -> int:
        # byte_level: the 256 byte characters; sentencepiece_bpe: the 256 byte-fallback tokens plus a few characters
        return len(self.leading_special_tokens) + 256 + (16 if self.kind == "sentencepiece_bpe" else 0)


# Each family's preset comes from its record (`hf_smallllm/families/<name>.py`).
TOKENIZER_PRESETS: dict[str, TokenizerPreset] = {
    name: TokenizerPreset(**copy.deepcopy(family.tokenizer)) for name, family in FAMILIES.items()
}


def tokenizer_preset(family: str, **overrides) -> TokenizerPreset:
    """The family's preset with `overrides` applied (None values are ignored); ValueError names unknown keys."""
    if family not in TOKENIZER_PRESETS:
        raise ValueError(f"no tokenizer preset for family {family!r}; choose one of {sorted(TOKENIZER_PRESETS)}")
    known = {f.name for f in fields(TokenizerPreset)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown tokenizer settings {sorted(unknown)}; known: {sorted(known)}")
    base = TOKENIZER_PRESETS[family]
    changes = {k: v for k, v in overrides.items() if v is not None}
    for key in ("leading_special_tokens", "trailing_special_tokens"):
        if key in changes:
            changes[key] = list(changes[key])
    return replace(base, **changes)


__all__ = ["TOKENIZER_PRESETS", "TokenizerPreset", "tokenizer_preset"]
