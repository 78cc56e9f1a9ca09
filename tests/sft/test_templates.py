"""Chat templates: stored in the tokenizer (save/load round trip), assistant-only masks turn by turn, special tokens
added and embeddings resized with tied heads kept tied."""

import pytest
import torch
from transformers import AutoTokenizer

from hf_smallllm.data.packing import IGNORE_INDEX
from hf_smallllm.sft import (
    FAMILY_CHAT_FORMATS,
    chat_format_for,
    encode_conversation,
    install_chat_template,
    stop_token_ids,
)

from .conftest import tiny_model

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2 plus 3?"},
    {"role": "assistant", "content": "2 plus 3 is 5."},
    {"role": "user", "content": "再乘以4呢？"},
    {"role": "assistant", "content": "5乘以4等于20。"},
]
END_OF_REPLY = {"generic": "</s>", "zephyr": "</s>", "geb": "</s>", "chatglm3": "</s>", "skywork": "[SEP]</s>"}


def assistant_spans(ids, labels):
    """Runs of consecutive labelled tokens."""
    spans, current = [], []
    for token, label in zip(ids, labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return spans


@pytest.mark.parametrize("family", sorted(FAMILY_CHAT_FORMATS))
def test_template_round_trip_and_assistant_mask(family, tokenizer, tmp_path):
    fmt = chat_format_for(family)
    install_chat_template(tokenizer, fmt)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.chat_template == fmt.template
    text = reloaded.apply_chat_template(CONVERSATION, tokenize=False)
    example = encode_conversation(reloaded, CONVERSATION)
    assert example == encode_conversation(tokenizer, CONVERSATION)
    assert reloaded.decode(example["input_ids"]) == text  # the ids are exactly the rendered text
    for token in fmt.special_tokens:
        assert len(reloaded(token, add_special_tokens=False)["input_ids"]) == 1, f"{token} is split"
    # multi-turn: exactly the two replies (with their end-of-reply markers) are targets, nothing else
    spans = [reloaded.decode(span) for span in assistant_spans(example["input_ids"], example["labels"])]
    replies = [turn["content"] for turn in CONVERSATION if turn["role"] == "assistant"]
    assert spans == [f"{reply}{END_OF_REPLY[fmt.name]}" for reply in replies]
    for turn in CONVERSATION:
        if turn["role"] != "assistant":
            assert turn["content"] in text and all(turn["content"] not in span for span in spans)
    prompt = reloaded.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
    assert text.startswith(prompt)  # the generation prompt is exactly what precedes a reply


def test_skywork_format_matches_published_prompt(tokenizer):
    install_chat_template(tokenizer, "skywork")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                                         tokenize=False)
    assert text == "</s><s>[USER]hi[SEP][BOT]yo[SEP]</s>"  # GH:SkyworkAI/Skywork README demo + ms-swift template


def test_tinyllama_speaks_zephyr(tokenizer):
    """TinyLlama-1.1B-Chat-v1.0's format (its tokenizer_config.json chat_template): `<|role|>\n{content}</s>\n` per
    turn, generation prompt `<|assistant|>\n`, markers as plain text (no added tokens), BOS from the tokenizer."""
    fmt = chat_format_for("tinyllama")
    assert fmt.name == "zephyr" and fmt.special_tokens == ()
    before = len(tokenizer)
    assert install_chat_template(tokenizer, fmt) == [] and len(tokenizer) == before
    text = tokenizer.apply_chat_template(CONVERSATION[:3], tokenize=False)
    assert text == ("<s><|system|>\nYou are terse.</s>\n<|user|>\nWhat is 2 plus 3?</s>\n"
                    "<|assistant|>\n2 plus 3 is 5.</s>\n")
    prompt = tokenizer.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == "<s><|system|>\nYou are terse.</s>\n<|user|>\nWhat is 2 plus 3?</s>\n<|assistant|>\n"
    assert stop_token_ids(tokenizer, fmt) == [tokenizer.eos_token_id]
    # answer-only loss: the reply and its </s> are targets; the newline after it, the markers, system and user are not
    example = encode_conversation(tokenizer, CONVERSATION)
    spans = [tokenizer.decode(span) for span in assistant_spans(example["input_ids"], example["labels"])]
    assert spans == ["2 plus 3 is 5.</s>", "5乘以4等于20。</s>"]
    targets = [i for i, label in enumerate(example["labels"]) if label != IGNORE_INDEX]
    assert example["input_ids"][targets[0] - 1] != tokenizer.eos_token_id  # the prompt's </s> is not a target


def test_geb_format_uses_gebs_tokens(tokenizer):
    """GEB's tokenization_geb.py writes `<sop>` with angle brackets; the prefix is `[gMASK]<sop>`, never ChatGLM3's
    bare `sop`."""
    added = install_chat_template(tokenizer, "geb")
    text = tokenizer.apply_chat_template(CONVERSATION[:3], tokenize=False)
    assert text == "[gMASK]<sop><|system|>\nYou are terse.<|user|>\nWhat is 2 plus 3?<|assistant|>\n2 plus 3 is 5.</s>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[:2] == tokenizer.convert_tokens_to_ids(["[gMASK]", "<sop>"])
    assert "sop" not in tokenizer.get_vocab() and tokenizer.convert_tokens_to_ids("sop") not in added
    assert stop_token_ids(tokenizer, "geb")[1:] == tokenizer.convert_tokens_to_ids(["<|user|>", "<|observation|>"])


def test_chatglm3_format_uses_role_markers(tokenizer):
    install_chat_template(tokenizer, "chatglm3")
    text = tokenizer.apply_chat_template(CONVERSATION[:3], tokenize=False)
    assert text == "[gMASK]sop<|system|>\nYou are terse.<|user|>\nWhat is 2 plus 3?<|assistant|>\n2 plus 3 is 5.</s>"
    sop = tokenizer.convert_tokens_to_ids("sop")
    assert tokenizer(text, add_special_tokens=False)["input_ids"][1] == sop
    assert sop not in tokenizer("sopranos sop", add_special_tokens=False)["input_ids"][:-1]  # whole words only
    assert stop_token_ids(tokenizer, "chatglm3")[1:] == tokenizer.convert_tokens_to_ids(["<|user|>", "<|observation|>"])


@pytest.mark.parametrize("family", ["skywork", "geb"])
def test_added_tokens_resize_embedding_and_keep_ties(family, tokenizer):
    model = tiny_model(family, tokenizer, vocab_size=len(tokenizer), tie_word_embeddings=True)
    old = model.get_input_embeddings().weight.detach().clone()
    added = install_chat_template(tokenizer, chat_format_for(family), model)
    assert added and max(added) == len(tokenizer) - 1
    weight = model.get_input_embeddings().weight
    assert weight.shape[0] == len(tokenizer) == model.config.vocab_size
    assert torch.equal(weight[: old.shape[0]], old)
    assert model.get_output_embeddings().weight.data_ptr() == weight.data_ptr()  # still tied
    logits = model(torch.tensor([added])).logits
    assert logits.shape[-1] == len(tokenizer) and torch.isfinite(logits).all()


def test_generic_template_needs_no_new_tokens(tokenizer):
    before = len(tokenizer)
    assert install_chat_template(tokenizer, "generic") == []
    assert len(tokenizer) == before


def test_unknown_format_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="unknown chat format 'chatml'"):
        install_chat_template(tokenizer, "chatml")


@pytest.fixture(scope="session")
def family_tokenizers():
    """Each family's kind of tokenizer (hf_smallllm.tokenization presets, with their chat markers), trained small."""
    from hf_smallllm.resources import corpus_path
    from hf_smallllm.tokenization import train_tokenizer

    texts = [corpus_path("en_kjv.txt").read_text(encoding="utf-8")[:40_000],
             corpus_path("zh_poetry.jsonl").read_text(encoding="utf-8")[:20_000]]
    made = {}

    def make(family):
        if family not in made:
            made[family] = train_tokenizer(texts=texts, family=family, vocab_size=600, progress=False)
        return made[family]

    return make


@pytest.mark.parametrize("family", sorted(FAMILY_CHAT_FORMATS))
def test_family_tokenizers_take_their_template(family, family_tokenizers, tmp_path):
    tokenizer = family_tokenizers(family)
    size = len(tokenizer)
    fmt = chat_format_for(family)
    install_chat_template(tokenizer, fmt)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    example = encode_conversation(reloaded, CONVERSATION)
    spans = [reloaded.decode(span) for span in assistant_spans(example["input_ids"], example["labels"])]
    replies = [turn["content"] for turn in CONVERSATION if turn["role"] == "assistant"]
    assert [span.replace(" ", "") for span in spans] == [
        f"{reply}{END_OF_REPLY[fmt.name].replace('</s>', tokenizer.eos_token)}".replace(" ", "") for reply in replies]
    assert len(tokenizer) >= size  # markers the preset already holds are reused, not added twice
