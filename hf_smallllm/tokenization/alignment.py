"""Keeping a model config's special-token ids in agreement with its tokenizer.

The tokenizer is the authority: ChuXin's config.json says BOS 1 / EOS 2, but its DeepSeek-LLM tokenizer (and its
generation_config.json) use 100000 / 100001 (docs/architectures.md, ChuXin "token-id trap").
`align_config_with_tokenizer`
copies the tokenizer's ids into the config (and a generation config), warning for every id that changes, and checks
that the embedding has a row for every token id.
"""

import warnings

_SPECIALS = ("bos", "eos", "pad")


def special_token_behaviour(tokenizer) -> tuple[bool, bool]:
    """(adds BOS, adds EOS) as measured by encoding a text, not as the `add_bos_token` attribute claims: in
    transformers v5 that attribute is not restored from tokenizer_config.json when a tokenizer.json exists."""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    added = len(ids) > len(bare)
    adds_bos = added and bos is not None and ids[0] == bos and bare[:1] != [bos]
    adds_eos = added and eos is not None and ids[-1] == eos and bare[-1:] != [eos]
    return adds_bos, adds_eos


def align_config_with_tokenizer(config, tokenizer, generation_config=None, *, warn: bool = True) -> dict:
    """Set `config.{bos,eos,pad}_token_id` (and the same on `generation_config`, when given) from `tokenizer`.

    Ids the tokenizer does not define (e.g. GPT-2 has no pad token) leave the config's value alone. Returns
    `{name: (old, new)}` for every id that changed; each change is also a warning when `warn`. ValueError when the
    tokenizer has more tokens than the config has embedding rows (`vocab_size`).
    """
    vocab_size = getattr(config, "vocab_size", None)
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer):,} tokens but config.vocab_size is {vocab_size:,}: "
                         "every token id needs an embedding row (resize the embedding or use a smaller tokenizer)")
    changes = {}
    for name in _SPECIALS:
        new = getattr(tokenizer, f"{name}_token_id")
        if new is None:
            continue
        key = f"{name}_token_id"
        for target, label in ((config, "config"), (generation_config, "generation_config")):
            if target is None:
                continue
            old = getattr(target, key, None)
            if old == new:
                continue
            if old is not None and warn:
                warnings.warn(f"{label}.{key} is {old} but the tokenizer's {name} token "
                              f"{getattr(tokenizer, f'{name}_token')!r} has id {new}; using the tokenizer's id",
                              stacklevel=2)
            setattr(target, key, new)
            changes[key if label == "config" else f"generation_config.{key}"] = (old, new)
    return changes


__all__ = ["align_config_with_tokenizer", "special_token_behaviour"]
