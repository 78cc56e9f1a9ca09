"""Chat templates: the Jinja text stored in the tokenizer (`tokenizer.chat_template`, saved by transformers v5 as
`chat_template.jinja` next to `tokenizer_config.json`) so that `tokenizer.apply_chat_template` works after
`save_pretrained`/`from_pretrained`, plus the special tokens each template needs.

Every template wraps the assistant's reply, including the end-of-turn marker the model must learn to emit, in
`{% generation %}...{% endgeneration %}`. transformers derives the assistant-token mask from those markers
(`return_assistant_tokens_mask=True`), so the loss mask comes from the template itself, turn by turn.

Formats and their sources:
- `zephyr` (TinyLlama): TinyLlama-1.1B-Chat-v1.0's format (HF:TinyLlama/TinyLlama-1.1B-Chat-v1.0
  tokenizer_config.json `chat_template`, read in the copies its derivatives ship, e.g.
  reach-vb/TinyLlama-1.1B-Chat-v1.0-Q4-mlx) [verified]: every turn is `<|system|>`/`<|user|>`/`<|assistant|>`, a
  newline, the content, `</s>` (EOS) and a newline; the generation prompt is `<|assistant|>` and a newline. The role
  markers are plain text there (the official tokenizer has only `<unk>` `<s>` `</s>` as added tokens), so this
  format adds no tokens. The official template leaves BOS to the tokenizer (`add_bos_token: true`, applied when the
  rendered text is tokenized, as in the model card's pipeline); ours writes `{{ bos_token }}` first, so the ids equal
  `tokenizer(official_text)` whichever way the template is applied.
- `geb` (GEB): the prefix `[gMASK]<sop>`, then `<|system|>`/`<|user|>`/`<|assistant|>`/`<|observation|>`, a newline
  and the content. GEB's `tokenization_geb.py` (HF:GEB-AGI/geb-1.3b, rev 70567aa) names `<sop>`/`<eop>` with angle
  brackets (ChatGLM3 writes `sop`/`eop`), see `tokenization/presets.py`. The rest of GEB's `chat()` prompt could not
  be read (only the head of tokenization_geb.py is in the stored copies; modeling_geb.py's `chat()` not at all):
  the layout after the prefix follows ChatGLM3's `build_chat_input` [assumed for GEB], and so does the EOS after
  each reply [assumed], which gives the model an explicit stop besides `<|user|>`/`<|observation|>`.
- `chatglm3`: ChatGLM3-6B's own layout, `[gMASK]sop` then the same role markers (HF:THUDM/chatglm3-6b
  tokenizer_config.json chat_template) [verified for ChatGLM3]; kept for ChatGLM3-style tokenizers.
- `skywork`: `</s><s>[USER]{query}[SEP][BOT]{reply}[SEP]</s>`, system text after a leading `<s>`
  (GH:SkyworkAI/Skywork README demo `special_encode`; ms-swift's `skywork` template) [verified for one turn];
  multi-turn continues with `<s>[USER]...` after the previous `</s>` [assumed].
- `generic` (ChuXin, BTLM base models): plain-text `System:`/`User:`/`Assistant:` headers with a newline, the reply
  ended by EOS; needs no new tokens, so it works with any base tokenizer. Project-defined: neither family publishes
  a chat format for its base model.

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

_ZEPHYR = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] in ['system', 'user'] %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}<|assistant|>\n"
    # transformers renders templates with trim_blocks, which would drop a literal newline right after a block tag
    "{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _glm_template(prefix: str) -> str:
    """ChatGLM3's layout after `prefix`: role marker, newline, content; the reply is followed by EOS."""
    return (
        prefix
        + "{% for message in messages %}"
        "{% if message['role'] in ['system', 'user', 'observation'] %}"
        "<|{{ message['role'] }}|>\n{{ message['content'] }}"
        "{% elif message['role'] == 'assistant' %}<|assistant|>\n"
        "{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}"
        "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )


GLM_ROLE_MARKERS = ("<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")

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
    "zephyr": ChatFormat("zephyr", _ZEPHYR),
    "geb": ChatFormat("geb", _glm_template("[gMASK]<sop>"), ("[gMASK]", "<sop>", *GLM_ROLE_MARKERS),
                      ("<|user|>", "<|observation|>")),
    "chatglm3": ChatFormat("chatglm3", _glm_template("[gMASK]sop"), ("[gMASK]", "sop", *GLM_ROLE_MARKERS),
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


__all__ = ["CHAT_FORMATS", "FAMILY_CHAT_FORMATS", "GLM_ROLE_MARKERS", "ROLES", "ChatFormat", "chat_format",
           "chat_format_for", "install_chat_template", "resize_embeddings_for", "stop_token_ids"]
