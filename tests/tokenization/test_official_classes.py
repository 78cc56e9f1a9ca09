"""Skywork's and GEB's remote SentencePiece tokenizer classes load as the package's fast tokenizers, with the ids of
the slow SentencePiece model.

The SentencePiece model is trained here (`hf_smallllm.testing.official_repos`, bilingual text and code) and laid out
as the official repositories lay theirs out (`tokenizer.model` / `GEBtokenizer.model`, a tokenizer_config.json naming
the remote class in `auto_map`, and that class's file as a tripwire). The reference ids come from the `sentencepiece`
library itself, the way the slow classes use it: text is cut at special tokens and each piece is encoded by the model
(which prepends its dummy `▁` to each), Skywork adds BOS, GEB does not, and GEB's special tokens take the ids right
after the SentencePiece vocabulary.
"""

import re

import pytest
from transformers import AutoTokenizer

import hf_smallllm  # noqa: F401  registers the official tokenizer classes
from hf_smallllm.families import FAMILIES
from hf_smallllm.testing.official_repos import (
    TRIPWIRE_ENV,
    train_sentencepiece_model,
    tripwire_fired,
    write_official_tokenizer,
)

TEXTS = [
    "Hello world, 12345 numbers!",
    "The quick brown fox jumps over the lazy dog.",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    "混合 mixed 文本 text, 2024年12月 and 3.14159",
    "def add(x, y):\n    return x  +  y\n\n\nclass A:\n\tpass\n",
    "  leading spaces and trailing   ",
    "emoji 🤖 and rare 龘 characters",
    "",
    " ",
]
SPECIAL_TEXTS = {
    "skywork": ["a</s>b <s> c", "<unk>start", "end</s>"],
    "geb": ["[gMASK]<sop>你好 hello", "text<eop>more [MASK] x", "<|user|>\n问题<|assistant|>"],
}


@pytest.fixture(scope="module")
def sentencepiece_model():
    return train_sentencepiece_model()


@pytest.fixture(scope="module")
def processor(sentencepiece_model):
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_proto=sentencepiece_model)


def slow_ids(processor, family: str, text: str) -> list[int]:
    """What the slow class computes: BOS (Skywork), then each stretch between special tokens through SentencePiece."""
    official = FAMILIES[family].official
    added = {token: processor.get_piece_size() + i for i, token in enumerate(official.tokenizer_added_tokens)}
    control = {processor.id_to_piece(i): i for i in range(processor.get_piece_size())
               if processor.is_control(i) or processor.is_unknown(i)}
    specials = {**control, **added}
    ids = [processor.bos_id()] if official.tokenizer_adds_bos else []
    pattern = "(" + "|".join(re.escape(token) for token in sorted(specials, key=len, reverse=True)) + ")"
    for piece in re.split(pattern, text):
        if piece in specials:
            ids.append(specials[piece])
        elif piece:
            ids += processor.encode(piece)
    return ids


@pytest.mark.parametrize("family", ["skywork", "geb"])
def test_official_tokenizer_ids_equal_the_slow_sentencepiece_model(family, sentencepiece_model, processor, tmp_path,
                                                                   monkeypatch):
    marker = tmp_path / "tripwire"
    monkeypatch.setenv(TRIPWIRE_ENV, str(marker))
    write_official_tokenizer(family, tmp_path, sentencepiece_model)
    for trust in (None, False, True):
        kwargs = {} if trust is None else {"trust_remote_code": trust}
        tokenizer = AutoTokenizer.from_pretrained(tmp_path, **kwargs)
        assert type(tokenizer).__name__ == FAMILIES[family].official.tokenizer_class
        assert type(tokenizer).__module__ == "hf_smallllm.models.tokenization_smallllm"
    assert tripwire_fired(marker) is None
    for text in TEXTS + SPECIAL_TEXTS[family]:
        assert tokenizer(text).input_ids == slow_ids(processor, family, text), text
    for text in TEXTS:  # decoding gives the text back (byte fallback included)
        assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == text


def test_geb_special_tokens_follow_the_sentencepiece_vocabulary(sentencepiece_model, processor, tmp_path):
    write_official_tokenizer("geb", tmp_path, sentencepiece_model)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    size = processor.get_piece_size()
    added = FAMILIES["geb"].official.tokenizer_added_tokens
    assert tokenizer.convert_tokens_to_ids(list(added)) == list(range(size, size + len(added)))
    assert len(tokenizer) == size + len(added)


def test_saved_official_tokenizer_reloads_without_its_sentencepiece_file(sentencepiece_model, tmp_path):
    write_official_tokenizer("skywork", tmp_path / "official", sentencepiece_model)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "official")
    tokenizer.save_pretrained(tmp_path / "saved")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert reloaded("床前明月光 hello 42").input_ids == tokenizer("床前明月光 hello 42").input_ids


def test_a_unigram_model_is_refused_in_one_line(tmp_path):
    import io

    import sentencepiece

    from hf_smallllm.models.tokenization_smallllm import tokenizer_from_sentencepiece
    from hf_smallllm.resources import corpus_path

    english = corpus_path("en_shakespeare.txt").read_text(encoding="utf-8").splitlines()[:2000]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(english), model_writer=model, vocab_size=300,
                                             model_type="unigram", minloglevel=2)
    (tmp_path / "tokenizer.model").write_bytes(model.getvalue())
    with pytest.raises(ValueError, match="BPE model is expected"):
        tokenizer_from_sentencepiece(tmp_path / "tokenizer.model")
