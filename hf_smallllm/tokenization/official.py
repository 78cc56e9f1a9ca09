"""Loading a family's official tokenizer files exactly as published, plus GGUF vocabularies.

- A folder (or Hub id) with `tokenizer.json` loads as a `PreTrainedTokenizerFast` from that file as-is, with the
  special tokens and `add_bos_token`/`add_eos_token` of its tokenizer_config.json. This avoids a transformers v5
  trap: a `tokenizer_class` such as `LlamaTokenizerFast` (ChuXin ships its DeepSeek byte-level BPE under that class)
  makes `AutoTokenizer` rebuild the pipeline from vocabulary and merges with Llama's Metaspace pre-tokenizer,
  which tokenizes byte-level vocabularies wrongly. `use_class=True` keeps the class's own behaviour.
- A folder with GPT-2's `vocab.json` + `merges.txt` only (BTLM's files) loads as GPT-2's byte-level BPE.
- A folder with a SentencePiece model only (`tokenizer.model`: Skywork, GEB, Llama-2 originals) loads through
  `AutoTokenizer` (transformers converts it; remote-code classes need `trust_remote_code=True`).
- A GGUF file (`gguf_file=`) is rebuilt from its vocabulary, merges/scores, token types and special ids.
  transformers' own GGUF conversion gets two of the three reference vocabularies wrong (measured on llama.cpp's
  47 reference tokenizations each): DeepSeek-LLM gets GPT-2's pre-tokenizer (46/47) and BOS/EOS re-added at
  102401/102402 instead of 100000/100001; Llama-2 SentencePiece gets `Metaspace(prepend_scheme="first")`, wrong on
  whitespace runs (32/47). Here the DeepSeek split rules and Llama-2's canonical normalizer are used: 47/47 each.
"""

import json
import os
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, models

from ..errors import UsageFileNotFoundError, UsageValueError
from .pipelines import byte_level_pre_tokenizer, sentencepiece_normalizer

# llama.cpp token types (gguf.TokenType): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
_UNKNOWN, _CONTROL, _USER_DEFINED = 2, 3, 4
# tokenizer.ggml.pre values whose byte-level split rules this package knows
_GGUF_BYTE_LEVEL_PRE = {"gpt-2": "gpt2", "deepseek-llm": "deepseek"}


_HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "subfolder")


def _published_file(path: str | os.PathLike, name: str, kwargs: dict) -> Path | None:
    """`name` inside a local folder, or fetched from the Hub repo `path` (None when the repo has no such file)."""
    folder = Path(path)
    if folder.is_dir():
        return folder / name if (folder / name).is_file() else None
    from transformers.utils.hub import cached_file

    resolved = cached_file(str(path), name, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False,
                           **{k: kwargs[k] for k in _HUB_KWARGS if k in kwargs})
    return Path(resolved) if resolved else None


def load_tokenizer(path: str | os.PathLike, gguf_file: str | None = None, *, use_class: bool = False, **kwargs):
    """Load tokenizer files as published (see the module docstring for what each layout becomes).

    `path`: a folder or Hub id; `gguf_file`: a GGUF file name inside `path` (or a path to one); `kwargs` go to
    `from_pretrained` (e.g. `trust_remote_code=True`, `revision=`).
    """
    from transformers import AutoTokenizer, GPT2Tokenizer, PreTrainedTokenizerFast

    if gguf_file is not None:
        gguf_path = Path(gguf_file) if Path(gguf_file).is_file() else Path(path) / gguf_file
        return load_gguf_tokenizer(gguf_path)
    if use_class:
        return AutoTokenizer.from_pretrained(path, **kwargs)
    if _published_file(path, "tokenizer.json", kwargs) is not None:
        # transformers v5 ignores tokenizer_config.json's add_bos_token/add_eos_token when a tokenizer.json exists and
        # keeps whatever its post-processor does; the publisher's config is the intent (ChuXin: no BOS), so pass it.
        config_file = _published_file(path, "tokenizer_config.json", kwargs)
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file is not None else {}
        for key in ("add_bos_token", "add_eos_token"):
            if key in config:
                kwargs.setdefault(key, config[key])
        return PreTrainedTokenizerFast.from_pretrained(path, **kwargs)
    if _published_file(path, "vocab.json", kwargs) and _published_file(path, "merges.txt", kwargs):
        # GPT-2's own class reads vocab.json + merges.txt (v5's GPT2TokenizerFast(vocab_file=...) builds an empty one)
        return GPT2Tokenizer.from_pretrained(path, **kwargs)
    folder = Path(path)
    if not folder.is_dir() or any(folder.glob("*.model")) or (folder / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(path, **kwargs)  # SentencePiece models, remote-code classes
    raise UsageFileNotFoundError(f"{folder}: no tokenizer.json, vocab.json + merges.txt, SentencePiece *.model or "
                            "tokenizer_config.json")


def _gguf_fields(path: Path) -> dict:
    # transformers' own GGUF metadata reader (no `gguf` package needed; ~20x faster than gguf.GGUFReader here). It
    # trusts the file: what it raises on a damaged one is said in one line here. The thorough check of a file's
    # structure (`hf_smallllm.convert.gguf_file.check_gguf_file_complete`, a layer above this package) is what the
    # command line runs first.
    import struct

    from transformers.integrations.gguf.reader import read_gguf_metadata

    try:
        metadata, _ = read_gguf_metadata(str(path), ("tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                                                           "tokenizer.ggml.token_type"))
    except (struct.error, UnicodeDecodeError, ValueError, OverflowError) as err:
        detail = " ".join(str(err).split())[:200]
        raise UsageValueError(f"{path} is not a valid or complete GGUF file ({type(err).__name__}: {detail})"
                              ) from None
    return metadata


def _special_kwargs(meta: dict, tokens: list[str]) -> dict:
    def token(key):
        index = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[index] if index is not None and 0 <= index < len(tokens) else None

    return {
        "bos_token": token("bos"), "eos_token": token("eos"), "unk_token": token("unknown"),
        "pad_token": token("padding"),
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
    }


def _byte_level_from_gguf(meta: dict, style: str) -> Tokenizer:
    from tokenizers import decoders

    tokens = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tokenizer.pre_tokenizer = byte_level_pre_tokenizer(style)
    tokenizer.decoder = decoders.ByteLevel()
    types = meta.get("tokenizer.ggml.token_type", [])
    # Control tokens are special (never split); user-defined ones are matched whole but decode as text.
    added = [AddedToken(tokens[i], special=(kind == _CONTROL), normalized=False)
             for i, kind in enumerate(types) if kind in (_CONTROL, _USER_DEFINED)]
    tokenizer.add_tokens(added)  # already in the vocabulary, so their ids stay where the GGUF puts them
    return tokenizer


def _sentencepiece_from_gguf(path: Path) -> Tokenizer:
    # transformers derives BPE merges from the SentencePiece scores correctly; only the normalizer / pre-tokenizer
    # need Llama-2's canonical form (prepend ▁, spaces to ▁, nothing split before BPE).
    from transformers.integrations.gguf import convert_gguf_tokenizer, get_gguf_tokenizer

    architecture, tokenizer_dict, _ = get_gguf_tokenizer(str(path))
    converted, _ = convert_gguf_tokenizer(architecture, tokenizer_dict)
    state = json.loads(converted.to_str())
    state["normalizer"] = json.loads(sentencepiece_normalizer().__getstate__())
    state["pre_tokenizer"] = None
    return Tokenizer.from_str(json.dumps(state))


def load_gguf_tokenizer(path: str | os.PathLike):
    """A `PreTrainedTokenizerFast` rebuilt from a GGUF file's tokenizer (llama.cpp `gpt2` model with the `gpt-2` or
    `deepseek-llm` pre-tokenizer, or `llama` SentencePiece); ValueError for other tokenizer types."""
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    if not path.is_file():
        raise UsageFileNotFoundError(f"no GGUF file {path}")
    meta = _gguf_fields(path)
    model = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if not tokens or not isinstance(tokens, list):
        raise UsageValueError(f"{path}: no tokenizer.ggml.tokens in the GGUF metadata")
    if model == "gpt2":
        pre = meta.get("tokenizer.ggml.pre", "gpt-2")
        if pre not in _GGUF_BYTE_LEVEL_PRE:
            raise UsageValueError(f"{path}: byte-level pre-tokenizer {pre!r} is not supported; supported: "
                             f"{sorted(_GGUF_BYTE_LEVEL_PRE)}")
        if not isinstance(meta.get("tokenizer.ggml.merges"), list):
            raise UsageValueError(f"{path}: a byte-level (gpt2) tokenizer needs tokenizer.ggml.merges, an array of "
                                  "strings, in the GGUF metadata")
        tokenizer = _byte_level_from_gguf(meta, _GGUF_BYTE_LEVEL_PRE[pre])
    elif model == "llama":
        tokenizer = _sentencepiece_from_gguf(path)
    else:
        raise UsageValueError(f"{path}: tokenizer model {model!r} is not supported; supported: gpt2, llama")
    context = meta.get(f"{meta.get('general.architecture')}.context_length")
    extra = {"model_max_length": int(context)} if context else {}
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, clean_up_tokenization_spaces=False,
                                   **_special_kwargs(meta, tokens), **extra)


__all__ = ["load_gguf_tokenizer", "load_tokenizer"]
