"""Tokenizers trained on the bundled bilingual corpus, one per family kind: digits, exact round trips, compression,
special tokens, id layout, BOS/EOS behaviour, save/reload, streaming sources and clear errors."""

import json
import warnings

import pytest
from transformers import AutoTokenizer

from hf_smallllm.resources import CORPUS
from hf_smallllm.tokenization import iter_training_texts, special_token_behaviour, tokenizer_preset, train_tokenizer

from .conftest import FAMILY_NAMES, TEST_VOCAB

ROUND_TRIP = {
    "english": "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer",
    "chinese": "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。子曰：「學而時習之，不亦說乎？」",
    "code": ("def mean(xs: list[float]) -> float:\n\tif not xs:\n        raise ValueError(\"empty\")  # 0x1F\n"
             "    return sum(xs) / len(xs)\n"),
    "emoji": "🤗 transformers ❤️ 👩‍👩‍👧 🇨🇳 ✨",
    "mixed": "In 2023年, GPT-2 cost $12,345.67 (≈ 8.9万元)…  double  spaces,\ttabs\r\nand «quotes» — 🚀!",
    "whitespace": "   leading and trailing   \n\n\n",
}
VALIDATION = {
    "english": ["en_shakespeare.txt", "en_kjv.txt", "en_pydoc.txt"],
    "chinese": ["zh_poetry.jsonl"],
    "code": ["code_python.jsonl"],
}


def validation_text(language: str, chars: int = 40_000) -> str:
    texts = iter_training_texts([str(CORPUS / "validation" / name) for name in VALIDATION[language]],
                                max_chars=chars, progress=False)
    return "".join(texts)


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("kind", list(ROUND_TRIP))
def test_decode_encode_round_trips(trained_tokenizers, family, kind):
    tokenizer = trained_tokenizers[family]
    text = ROUND_TRIP[kind]
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id not in ids or family == "btlm"  # byte fallback / byte level: nothing unknown


@pytest.mark.parametrize("family", ["chuxin", "tinyllama", "skywork", "geb"])
def test_digits_are_single_tokens(trained_tokenizers, family):
    tokenizer = trained_tokenizers[family]
    text = "In 2023 the price rose from 12345.67 to 3.14159, i.e. 1000000 units; 年份2024年"
    pieces = [tokenizer.decode([i]) for i in tokenizer.encode(text, add_special_tokens=False)]
    for piece in pieces:
        assert not any(c.isdigit() for c in piece) or piece.strip() in "0123456789", pieces
    assert sum(piece.strip().isdigit() for piece in pieces) == sum(c.isdigit() for c in text)


def test_compression_beats_bytes_per_language(trained_tokenizers, capsys):
    rows = []
    for language in VALIDATION:
        text = validation_text(language)
        byte_baseline = len(text) / len(text.encode("utf-8"))  # a byte-level model without merges
        for family, tokenizer in trained_tokenizers.items():
            ratio = len(text) / len(tokenizer.encode(text, add_special_tokens=False))
            rows.append((language, family, ratio, byte_baseline))
            assert ratio > 1.2 * byte_baseline, (language, family, ratio, byte_baseline)
    with capsys.disabled():
        print(f"\ncharacters per token, vocab {TEST_VOCAB}, bundled validation text:")
        for language, family, ratio, baseline in rows:
            print(f"  {language:8s} {family:10s} {ratio:5.2f}  (bytes: {baseline:.2f})")


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_special_tokens_are_never_split(trained_tokenizers, family):
    tokenizer = trained_tokenizers[family]
    preset = tokenizer_preset(family)
    vocab = tokenizer.get_vocab()
    for token in preset.leading_special_tokens + preset.trailing_special_tokens:
        ids = tokenizer.encode(f"前文{token}after text", add_special_tokens=False)
        assert ids.count(vocab[token]) == 1, (token, tokenizer.convert_ids_to_tokens(ids))
        assert token not in tokenizer.decode(ids, skip_special_tokens=True)
    if preset.kind == "sentencepiece_bpe":  # byte tokens are vocabulary entries, not special: "<0x41>" is text
        ids = tokenizer.encode("<0x41>", add_special_tokens=False)
        assert vocab["<0x41>"] not in ids and tokenizer.decode(ids) == "<0x41>"


def test_id_layout_follows_the_real_families(trained_tokenizers):
    chuxin, btlm, llama, skywork, geb = (trained_tokenizers[f] for f in
                                         ("chuxin", "btlm", "tinyllama", "skywork", "geb"))
    assert (chuxin.bos_token_id, chuxin.eos_token_id, chuxin.pad_token_id) == (TEST_VOCAB, TEST_VOCAB + 1,
                                                                                 TEST_VOCAB + 1)
    assert chuxin.bos_token == "<｜begin▁of▁sentence｜>" and len(chuxin) == TEST_VOCAB + 2
    assert btlm.bos_token_id == btlm.eos_token_id == TEST_VOCAB and btlm.pad_token is None
    assert [llama.convert_tokens_to_ids(t) for t in ("<unk>", "<s>", "</s>", "<0x00>", "<0xFF>")] == [0, 1, 2, 3, 258]
    assert len(llama) == TEST_VOCAB
    ids = [skywork.convert_tokens_to_ids(t) for t in ("[USER]", "[BOT]", "[SEP]")]
    assert ids == [TEST_VOCAB + i for i in range(3)]
    assert skywork.pad_token_id == 0
    # GEB's order (tokenization_geb.py): [MASK] [gMASK] [sMASK] <sop> <eop> <eod>, then the role markers
    geb_order = ["[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<eod>", "<|system|>", "<|user|>", "<|assistant|>",
                 "<|observation|>"]
    assert geb.convert_tokens_to_ids(geb_order) == [TEST_VOCAB + i for i in range(10)]
    assert len(geb) == TEST_VOCAB + 10 and "sop" not in geb.get_vocab()
    assert (geb.bos_token_id, geb.eos_token_id, geb.pad_token_id) == (1, 2, 0)


@pytest.mark.parametrize("family, adds", [("chuxin", (False, False)), ("btlm", (False, False)),
                                          ("tinyllama", (True, False)), ("skywork", (True, False)),
                                          ("geb", (False, False))])
def test_saved_tokenizer_reloads_identically(trained_tokenizers, tmp_path, family, adds):
    tokenizer = trained_tokenizers[family]
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    sample = validation_text("english", 3000) + validation_text("chinese", 2000) + ROUND_TRIP["mixed"]
    assert reloaded(sample)["input_ids"] == tokenizer(sample)["input_ids"]
    assert len(reloaded) == len(tokenizer) and reloaded.all_special_tokens == tokenizer.all_special_tokens
    assert (reloaded.bos_token_id, reloaded.eos_token_id, reloaded.pad_token_id) == (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert special_token_behaviour(tokenizer) == special_token_behaviour(reloaded) == adds
    assert reloaded.model_max_length == tokenizer_preset(family).model_max_length


def test_dataset_streaming_and_overrides(tmp_path):
    """A `datasets` JSON builder streamed, a sample limit, custom specials and BOS/EOS behaviour, saved atomically."""
    data = tmp_path / "docs.jsonl"
    lines = (CORPUS / "zh_poetry.jsonl").read_text(encoding="utf-8").splitlines()[:400]
    data.write_text("\n".join(json.dumps({"body": json.loads(line)["text"]}, ensure_ascii=False) for line in lines),
                    encoding="utf-8")
    out = tmp_path / "tok"
    train_tokenizer(
        dataset="json", dataset_kwargs={"data_files": str(data), "split": "train"}, text_field="body",
        family="chuxin", vocab_size=600, max_chars=20_000, output_dir=out, progress=False,
        trailing_special_tokens=["<|bos|>", "<|eos|>", "<|user|>"], bos_token="<|bos|>", eos_token="<|eos|>",
        pad_token="<|eos|>", add_bos_token=True, add_eos_token=True, model_max_length=1024)
    reloaded = AutoTokenizer.from_pretrained(out)
    ids = reloaded("春眠不覺曉")["input_ids"]
    assert ids[0] == 600 and ids[-1] == 601 and reloaded.convert_tokens_to_ids("<|user|>") == 602
    assert reloaded.model_max_length == 1024
    assert not list(tmp_path.glob(".tok.*"))  # no staging folder left behind


def test_text_files_stream_in_bounded_chunks(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("一行中文 and English 123\n" * 20_000, encoding="utf-8")
    chunks = list(iter_training_texts([str(path)], chunk_chars=10_000, progress=False))
    assert len(chunks) > 10 and max(map(len, chunks)) < 10_100
    assert "".join(chunks) == path.read_text(encoding="utf-8")
    assert sum(map(len, iter_training_texts([str(path)], max_chars=5_000, progress=False))) == 5_000


def test_small_corpus_warns_and_bad_input_is_named(tmp_path):
    with pytest.warns(UserWarning, match="only supported"):
        tokenizer = train_tokenizer(texts=["tiny text, tiny text"] * 3, family="btlm", vocab_size=5000, progress=False)
    assert tokenizer.eos_token_id == len(tokenizer) - 1
    with pytest.raises(ValueError, match="no tokenizer preset for family 'gpt4'"):
        train_tokenizer(texts=["x"], family="gpt4")
    with pytest.raises(ValueError, match="vocab_size=100 is too small"):
        train_tokenizer(texts=["x"], family="tinyllama", vocab_size=100)
    with pytest.raises(ValueError, match="bos_token='<b>' is not among the special tokens"):
        train_tokenizer(texts=["x"], family="chuxin", bos_token="<b>")
    with pytest.raises(FileNotFoundError, match="no training file matches"):
        train_tokenizer([str(tmp_path / "missing*.txt")], family="chuxin")
    with pytest.raises(ValueError, match="unknown tokenizer settings"):
        train_tokenizer(texts=["x"], family="chuxin", vocabsize=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="give training files"):
            train_tokenizer(family="chuxin")
