"""The `tokenizers` pipelines (normalizer, pre-tokenizer, model, decoder) of the three tokenizer kinds the families use.

- `byte_level` with `pre_tokenizer="gpt2"`: GPT-2's byte-level BPE (BTLM). Text is cut by GPT-2's regex, every byte
  is mapped to a printable character, so nothing is ever unknown.
- `byte_level` with `pre_tokenizer="deepseek"`: DeepSeek-LLM's byte-level BPE (ChuXin). Text is cut by the five
  DeepSeek-LLM split rules (newlines; runs of Latin/Greek/Cyrillic/... letters with one leading space; punctuation
  runs incl. full-width CJK punctuation; trailing whitespace; runs of CJK ideographs and Hangul) and then into
  single digits, then byte-mapped. The rules are llama.cpp's `LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_LLM` strings (MIT),
  stored in `deepseek_llm_pretokenizer_regexes.json`; with the real DeepSeek-LLM vocabulary they reproduce all 47 of
  llama.cpp's reference tokenizations (tests/tokenization/test_reference_vocabularies.py). The sixth rule
  (`\\p{N}+`, digit runs) is replaced by single-digit splitting, which the real vocabulary also implies.
- `sentencepiece_bpe`: Llama-2-style BPE with byte fallback (TinyLlama, Skywork, GEB). Spaces become `▁`, one `▁` is
  prepended, characters outside the learned alphabet fall back to `<0xNN>` byte tokens, so nothing is unknown and
  decoding is exact. The official Llama-2 files split nothing before BPE (`sentencepiece_pipeline(word_split=False)`,
  how SentencePiece applies its merges); a tokenizer trained here keeps the word split it was trained with
  (`▁`-prefixed words, runs of `▁`, and single digits when `split_digits`), so training and encoding agree.
"""

import json
from functools import lru_cache
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models
from tokenizers import pre_tokenizers as pt

# one home for SentencePiece's canonical normaliser and decoder: the official tokenizer classes, which ship as remote
# code, use them too
from ..models.tokenization_smallllm import SPIECE_UNDERLINE, sentencepiece_decoder, sentencepiece_normalizer

KINDS = ("byte_level", "sentencepiece_bpe")
BYTE_LEVEL_PRE_TOKENIZERS = ("gpt2", "deepseek")
BYTE_TOKENS = [f"<0x{value:02X}>" for value in range(256)]
_DEEPSEEK_REGEXES = Path(__file__).with_name("deepseek_llm_pretokenizer_regexes.json")


@lru_cache(maxsize=1)
def deepseek_split_regexes() -> tuple[str, ...]:
    """The six DeepSeek-LLM split rules (newline, letters, punctuation, trailing whitespace, CJK, numbers)."""
    return tuple(json.loads(_DEEPSEEK_REGEXES.read_text(encoding="utf-8")))


def byte_level_pre_tokenizer(style: str, split_digits: bool = False):
    """GPT-2 (`style="gpt2"`) or DeepSeek-LLM (`style="deepseek"`, always splits digits) pre-tokenization."""
    if style == "deepseek":
        # The numbers rule (sixth) is replaced by one-digit pieces: DeepSeek-LLM has no multi-digit tokens.
        steps = [pt.Split(Regex(pattern), "isolated") for pattern in deepseek_split_regexes()[:5]]
        steps += [pt.Digits(individual_digits=True), pt.ByteLevel(add_prefix_space=False, use_regex=False)]
        return pt.Sequence(steps)
    if style == "gpt2":
        byte_level = pt.ByteLevel(add_prefix_space=False, use_regex=True)
        return pt.Sequence([pt.Digits(individual_digits=True), byte_level]) if split_digits else byte_level
    raise ValueError(f"byte-level pre_tokenizer={style!r}; choose one of {BYTE_LEVEL_PRE_TOKENIZERS}")


def byte_level_pipeline(style: str, split_digits: bool = False) -> Tokenizer:
    """An untrained byte-level BPE tokenizer with the GPT-2 or DeepSeek-LLM pre-tokenizer."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = byte_level_pre_tokenizer(style, split_digits)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def sentencepiece_word_split(split_digits: bool):
    """How a trained `sentencepiece_bpe` tokenizer cuts normalized text into words before BPE: a word is an optional
    `▁` plus non-`▁` characters; runs of `▁` (indentation, double spaces) are their own words, as SentencePiece keeps
    whitespace pieces apart from text pieces."""
    words = pt.Split(Regex(f"{SPIECE_UNDERLINE}?[^{SPIECE_UNDERLINE}]+"), "isolated")
    return pt.Sequence([words, pt.Digits(individual_digits=True)]) if split_digits else words


def sentencepiece_pipeline(unk_token: str = "<unk>", split_digits: bool = False, word_split: bool = True) -> Tokenizer:
    """An untrained Llama-style BPE tokenizer with byte fallback."""
    tokenizer = Tokenizer(models.BPE(unk_token=unk_token, byte_fallback=True, fuse_unk=True))
    tokenizer.normalizer = sentencepiece_normalizer()
    tokenizer.pre_tokenizer = sentencepiece_word_split(split_digits) if word_split else None
    tokenizer.decoder = sentencepiece_decoder()
    return tokenizer


__all__ = [
    "BYTE_LEVEL_PRE_TOKENIZERS", "BYTE_TOKENS", "KINDS", "SPIECE_UNDERLINE", "byte_level_pipeline",
    "byte_level_pre_tokenizer", "deepseek_split_regexes", "sentencepiece_decoder", "sentencepiece_normalizer",
    "sentencepiece_pipeline", "sentencepiece_word_split",
]
