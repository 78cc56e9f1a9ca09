"""Fast tokenizers for the official SentencePiece tokenizers that Skywork and GEB publish as remote code.

Skywork's `tokenization_skywork.SkyworkTokenizer` and GEB's `tokenization_geb.GEBTokenizer` are slow, Python
SentencePiece wrappers that only run with `trust_remote_code=True`. `SentencePieceBPETokenizer` builds the same
tokenizer from the repository's `tokenizer.model` with the `tokenizers` library: the pieces, merges, byte fallback
and control tokens of the model file (read by transformers' `SentencePieceExtractor`), SentencePiece's canonical
normalisation (one `▁` prepended to every stretch of text between special tokens, spaces to `▁`, nothing split before
BPE: what the slow classes do, and what transformers' own Llama conversion gets wrong on runs of spaces), and the
special tokens a family's class appends after the SentencePiece vocabulary. `hf_smallllm.families.register` makes one
subclass per family, named as the family's `tokenizer_config.json` names its class, so `AutoTokenizer` finds it
without running the repository's file.

This file ships as remote code next to the model files, so it imports only transformers and `tokenizers`
(`sentencepiece` and `protobuf` when a `tokenizer.model` is converted).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, cast

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
from transformers import PreTrainedTokenizerFast
from transformers.utils import logging

logger = logging.get_logger(__name__)

SPIECE_UNDERLINE = "▁"


def sentencepiece_normalizer() -> normalizers.Normalizer:
    """Llama-2's: prepend one `▁`, then every space becomes `▁` (so runs of spaces stay visible to BPE)."""
    return normalizers.Sequence([normalizers.Prepend(SPIECE_UNDERLINE), normalizers.Replace(" ", SPIECE_UNDERLINE)])


def sentencepiece_decoder() -> decoders.Decoder:
    """`▁` back to spaces, `<0xNN>` tokens back to bytes, then drop the one prepended space."""
    return decoders.Sequence([
        decoders.Replace(SPIECE_UNDERLINE, " "),
        decoders.ByteFallback(),
        decoders.Fuse(),
        decoders.Strip(" ", 1, 0),
    ])


def tokenizer_from_sentencepiece(model_file: str | os.PathLike, added_special_tokens: tuple[str, ...] = ()
                                 ) -> Tokenizer:
    """A `tokenizers.Tokenizer` equal to the SentencePiece BPE model in `model_file`, with `added_special_tokens`
    given the ids right after its vocabulary, in order. ValueError for a model that is not BPE."""
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    extractor = SentencePieceExtractor(str(model_file))
    if extractor.proto.trainer_spec.model_type != 2:  # sentencepiece ModelType: 1 unigram, 2 bpe
        raise ValueError(f"{model_file}: a SentencePiece BPE model is expected (Skywork's and GEB's are); this one "
                         f"has model_type {extractor.proto.trainer_spec.model_type}")
    normalizer_spec = extractor.proto.normalizer_spec
    if normalizer_spec.remove_extra_whitespaces or normalizer_spec.precompiled_charsmap:
        # The published Llama-2-style models normalise nothing else; a model that does would need its charsmap.
        raise ValueError(f"{model_file}: SentencePiece normalisation ({normalizer_spec.name!r}) is not supported; "
                         "only the identity normalisation of Llama-2-style models is")
    # returns the keyword arguments of a tokenizer class (vocab, merges, special tokens), whatever its annotation says
    extracted = cast("dict[str, Any]", extractor.extract(models.BPE))
    vocab: dict[str, int] = extracted["vocab"]
    merges: list[tuple[str, str]] = extracted["merges"]
    declared_tokens: list[AddedToken] = extracted["additional_special_tokens"]
    unk_id = extractor.proto.trainer_spec.unk_id
    pieces = list(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=pieces[unk_id], fuse_unk=True,
                                     byte_fallback=True, dropout=None))
    tokenizer.normalizer = sentencepiece_normalizer() if normalizer_spec.add_dummy_prefix else (
        normalizers.Replace(" ", SPIECE_UNDERLINE))
    tokenizer.pre_tokenizer = None
    tokenizer.decoder = sentencepiece_decoder()
    # control and unknown pieces are special (never produced from text by BPE, matched whole)
    unknown = AddedToken(pieces[unk_id], special=True, normalized=False)
    declared = [token for token in declared_tokens if str(token) != pieces[unk_id]]
    tokenizer.add_special_tokens([unknown] + [token for token in declared if token.special])
    tokenizer.add_tokens([token for token in declared if not token.special])  # user-defined pieces: matched whole
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in added_special_tokens])
    return tokenizer


class SentencePieceBPETokenizer(PreTrainedTokenizerFast):
    """A fast tokenizer built from a published SentencePiece BPE `tokenizer.model` (see the module docstring).

    Subclasses (made per family by `hf_smallllm.families.register`) set `added_special_tokens` (appended after the
    SentencePiece vocabulary, as the family's slow class does) and `default_add_bos_token`."""

    # Not the usual "vocab_file" key: for a repository without tokenizer.json, transformers replaces that entry with
    # the first match of "tokenizer.model" in the repository's file names, which is wrong for GEB's
    # "GEBtokenizer.model" (it matches inside the name).
    vocab_files_names = {"sentencepiece_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]
    added_special_tokens: ClassVar[tuple[str, ...]] = ()
    default_add_bos_token: ClassVar[bool] = True
    replaces: ClassVar[str] = ""  # the repository's class this one stands in for, for the notice below

    @classmethod
    def convert_to_native_format(cls, trust_remote_code=False, **kwargs) -> dict[str, Any]:
        tokenizer_file = kwargs.get("tokenizer_file")
        model_file = kwargs.pop("sentencepiece_file", None)
        kwargs.pop("vocab_file", None)
        if not (tokenizer_file and os.path.isfile(tokenizer_file)):
            if not (model_file and os.path.isfile(model_file)):
                raise ValueError(f"{cls.__name__} needs the SentencePiece model "
                                 f"{cls.vocab_files_names['sentencepiece_file']} (or a tokenizer.json) next to its "
                                 "tokenizer_config.json")
            kwargs.pop("tokenizer_file", None)
            kwargs["tokenizer_object"] = tokenizer_from_sentencepiece(model_file, cls.added_special_tokens)
        if cls.replaces:
            logger.warning_once(
                f"{cls.replaces} is loaded as hf_smallllm's fast {cls.__name__} built from the repository's "
                "SentencePiece model; the repository's tokenizer code is not run, whatever trust_remote_code says.")
        kwargs.setdefault("add_bos_token", cls.default_add_bos_token)
        kwargs.setdefault("add_eos_token", False)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        return kwargs


def official_tokenizer_class(name: str, model_file: str, added_special_tokens: tuple[str, ...], add_bos_token: bool,
                             replaces: str) -> type[SentencePieceBPETokenizer]:
    """The fast class named `name` (the `tokenizer_class` of a family's published tokenizer_config.json), reading the
    SentencePiece model `model_file`."""
    return type(name, (SentencePieceBPETokenizer,), {
        "__module__": __name__, "__doc__": f"hf_smallllm's fast stand-in for {replaces}.",
        "vocab_files_names": {"sentencepiece_file": model_file},
        "added_special_tokens": tuple(added_special_tokens), "default_add_bos_token": add_bos_token,
        "replaces": replaces,
    })


__all__ = ["SentencePieceBPETokenizer", "official_tokenizer_class", "sentencepiece_decoder",
           "sentencepiece_normalizer", "tokenizer_from_sentencepiece"]
