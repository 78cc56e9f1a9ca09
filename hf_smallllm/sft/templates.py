"""Chat templates: the Jinja text stored in the tokenizer (`tokenizer.chat_template`, saved by transformers v5 as
`chat_template.jinja` next to `tokenizer_config.json`) so that `tokenizer.apply_chat_template` works after
`save_pretrained`/`from_pretrained`, plus the special tokens each template needs.

Every template wraps the assistant's reply, including the end-of-turn marker the model must learn to emit, in
`{% generation %}...{% endgeneration %}`. transformers derives the assistant-token mask from those markers
(`return_assistant_tokens_mask=True`), so the loss mask comes from the template itself, turn by turn.

Formats and their sources:
- `chatglm3` (GEB): ChatGLM3-6B's layout: the prefix `[gMASK]sop`, then role markers `<|system|>`, `<|user|>`,
  `<|assistant|>`, `<|observation|>`, each followed by a newline and the content (HF:THUDM/chatglm3-6b
  tokenizer_config.json chat_template) [verified for ChatGLM3]. That GEB (tokenizer "refined from ChatGLM-3",
  ChatGLM-style `model.chat`) uses the same prefix and markers is [assumed]; so is the EOS after each reply, which
  gives the model an explicit stop (ChatGLM3 itself stops at the next `<|user|>`/`<|observation|>`, also stop tokens).
- `skywork`: `</s><s>[USER]{query}[SEP][BOT]{reply}[SEP]</s>`, system text after a leading `<s>`
  (GH:SkyworkAI/Skywork README demo `special_encode`; ms-swift's `skywork` template) [verified for one turn];
  multi-turn continues with `<s>[USER]...` after the previous `</s>` [assumed].
- `generic` (base models without a published chat format): plain-text `System:`/`User:`/`Assistant:` headers with a
  newline, the reply ended by EOS; needs no new tokens, so it works with any base tokenizer.

Which format a family uses is its record's `chat_format` (`hf_smallllm/families/<name>.py`).
"""

from dataclasses import dataclass

from ..families import FAMILIES

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatFormat:
    name: str
    template: str  # Jinja, with {% generation %} around what the assistant is trained to produce
    special_tokens: tuple[str, ...] = ()  # added to the tokenizer (never split) when missing
    stop_tokens: tuple[str, ...] = ()  # besides EOS, tokens that end a reply at generation time


_GENERIC = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}System:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}User:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}Assistant:\n"
    "{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}\n\n"
    "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:\n{% endif %}"
)

_CHATGLM3 = (
    "[gMASK]sop"
    "{% for message in messages %}"
    "{% if message['role'] in ['system', 'user', 'observation'] %}<|{{ message['role'] }}|>\n{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}<|assistant|>\n"
    "{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}"
    "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_SKYWORK = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ bos_token }}{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}"
    "{% if loop.first or messages[loop.index0 - 1]['role'] != 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ bos_token }}[USER]{{ message['content'] }}[SEP][BOT]"
    "{% elif message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] }}[SEP]{{ eos_token }}{% endgeneration %}"
    "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
)

CHAT_FORMATS: dict[str, ChatFormat] = {
    "generic": ChatFormat("generic", _GENERIC),
    "chatglm3": ChatFormat("chatglm3", _CHATGLM3,
                           ("[gMASK]", "sop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"),
                           ("<|user|>", "<|observation|>")),
    "skywork": ChatFormat("skywork", _SKYWORK, ("[USER]", "[BOT]", "[SEP]"), ("[SEP]",)),
}

# Which format each family's published chat usage follows (data, not code paths: a recipe can pick any format).
FAMILY_CHAT_FORMATS = {name: family.chat_format for name, family in FAMILIES.items()}


def chat_format(name: str) -> ChatFormat:
    if name not in CHAT_FORMATS:
        raise ValueError(f"unknown chat format {name!r}; choose one of {', '.join(CHAT_FORMATS)}")
    return CHAT_FORMATS[name]


def chat_format_for(family: str | None, name: str | None = None) -> ChatFormat:
    """The format named `name`, or the family's default ("auto"/None), or `generic` for a custom config."""
    if name and name != "auto":
        return chat_format(name)
    return chat_format(FAMILY_CHAT_FORMATS.get(family or "", "generic"))


def install_chat_template(tokenizer, fmt: ChatFormat | str, model=None) -> list[int]:
    """Store `fmt`'s template in `tokenizer`, add its special tokens when missing, and, given `model`, grow the
    embedding (and an untied head) to cover them; tied heads stay tied. Returns the ids of tokens that were added
    (their embedding rows are new and must be trained)."""
    if isinstance(fmt, str):
        fmt = chat_format(fmt)
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer has no EOS token; chat templates end every reply with one")
    if "bos_token" in fmt.template and tokenizer.bos_token is None:
        raise ValueError(f"chat format {fmt.name!r} needs a BOS token and the tokenizer has none")
    vocab = tokenizer.get_vocab()
    missing = [token for token in fmt.special_tokens if token not in vocab]
    if missing:
        from tokenizers import AddedToken

        # a bare word such as ChatGLM's `sop` must not match inside "sopranos": word tokens match whole words only
        tokens = [AddedToken(token, special=True, normalized=False, single_word=token.isalnum()) for token in missing]
        tokenizer.add_special_tokens({"extra_special_tokens": tokens}, replace_extra_special_tokens=False)
    tokenizer.chat_template = fmt.template
    added = tokenizer.convert_tokens_to_ids(missing)
    if model is not None:
        resize_embeddings_for(model, tokenizer)
    return added


def resize_embeddings_for(model, tokenizer) -> bool:
    """Grow the input embedding (and the head) when the tokenizer has more entries than the model has rows; new rows
    start at the mean of the old ones (transformers' `mean_resizing`), so new tokens start with plausible logits.
    A model with more rows than the tokenizer (published vocabularies are often padded) is left alone."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) <= rows:
        return False
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return True


def stop_token_ids(tokenizer, fmt: ChatFormat | str) -> list[int]:
    """EOS plus the format's end-of-reply tokens: the `eos_token_id` list for `generation_config`."""
    if isinstance(fmt, str):
        fmt = chat_format(fmt)
    ids = [tokenizer.eos_token_id]
    for token in fmt.stop_tokens:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is not None and token_id != tokenizer.unk_token_id and token_id not in ids:
            ids.append(token_id)
    return ids


__all__ = ["CHAT_FORMATS", "ChatFormat", "FAMILY_CHAT_FORMATS", "ROLES", "chat_format", "chat_format_for",
           "install_chat_template", "resize_embeddings_for", "stop_token_ids"]
