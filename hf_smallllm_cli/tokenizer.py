"""`hf-smallllm tokenizer train|inspect`: train a family's kind of tokenizer; show what a tokenizer folder does."""

import argparse
import json

from ._options import FAMILY_NAMES

COMMAND = "tokenizer"
HELP = "train a family-style tokenizer (DeepSeek/GPT-2 byte-level BPE, Llama BPE with byte fallback) or inspect one"
DESCRIPTION = """Train a tokenizer of a family's kind from local files or a `datasets` dataset and save it as a
PreTrainedTokenizerFast folder that AutoTokenizer.from_pretrained loads (`train`), or show a tokenizer's size, special
tokens, BOS/EOS behaviour and how it splits a text (`inspect`)."""

_SAMPLE = "Hello world! In 2023 the price was 12345.67 元。床前明月光，疑是地上霜。def f(x):\n    return x  # 😀"


def register(parser):
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser(
        "train", help="train a tokenizer of a family's kind", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train with the `tokenizers` library (streamed, bounded memory, progress bar). Family presets: "
        "chuxin = DeepSeek-LLM byte-level BPE (digits split, CJK/punctuation-aware split, BOS/EOS after the learned "
        "entries, no BOS added); btlm = GPT-2 byte-level BPE (<|endoftext|> last); tinyllama / skywork / geb = "
        "Llama-style BPE with byte fallback (<unk> 0, <s> 1, </s> 2, byte tokens 3-258; digits split). See "
        "docs/tokenizers.md.")
    train.add_argument("files", nargs="*", help="training files, folders or globs (.txt plain text; .jsonl/.json/"
                       ".parquet records with --text-field); 'bundled:<name>' is a bundled corpus file; "
                       "'bundled' alone means the whole bundled training corpus")
    train.add_argument("--family", choices=sorted(FAMILY_NAMES), default="chuxin", help="whose kind of tokenizer")
    train.add_argument("--vocab-size", type=int, default=None,
                       help="learned entries incl. leading specials and byte tokens (default: the family's real size; "
                       "trailing special tokens come after)")
    train.add_argument("--output-dir", required=True, help="folder to write (replaced only once complete)")
    train.add_argument("--dataset", default=None, help="a `datasets` name or builder (json, parquet, text, ...) read "
                       "with streaming=True")
    train.add_argument("--dataset-kwargs", default="{}", type=json.loads,
                       help="JSON passed to datasets.load_dataset, e.g. "
                            '\'{"split": "train", "data_files": "x.jsonl"}\'')
    train.add_argument("--text-field", default="text", help="record field that holds the text")
    train.add_argument("--max-chars", type=int, default=None, help="train on at most this many characters")
    train.add_argument("--min-frequency", type=int, default=None, help="minimum pair count to merge (default: 2)")
    train.add_argument("--model-max-length", type=int, default=None, help="tokenizer model_max_length "
                       "(default: the family's context length)")
    for name in ("bos", "eos", "pad", "unk"):
        train.add_argument(f"--{name}-token", default=None, help=f"{name.upper()} token (default: the family's; "
                           "a new name is added to the trailing special tokens)")
    train.add_argument("--special-token", action="append", default=[], metavar="TOKEN",
                       help="extra special token (e.g. chat markers), appended after the learned entries; repeatable")
    train.add_argument("--add-bos", action=argparse.BooleanOptionalAction, default=None,
                       help="add BOS to every encoded text (default: the family's)")
    train.add_argument("--add-eos", action=argparse.BooleanOptionalAction, default=None,
                       help="add EOS to every encoded text (default: the family's)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=run_train)

    inspect = actions.add_parser(
        "inspect", help="show a tokenizer's size, special tokens, BOS/EOS behaviour and a sample tokenization",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    inspect.add_argument("path", help="tokenizer folder (or a folder holding --gguf-file, or a .gguf file)")
    inspect.add_argument("--gguf-file", default=None, help="GGUF file (in PATH, or a path) whose vocabulary to load")
    inspect.add_argument("--text", default=_SAMPLE, help="text to tokenize")
    inspect.set_defaults(func=run_inspect)


def _training_files(files: list[str]) -> list[str]:
    if files == ["bundled"]:
        from hf_smallllm.resources import CORPUS

        return [str(p) for p in sorted(CORPUS.glob("*")) if p.is_file() and p.name != "README.md"]
    return files


def run_train(args) -> int:
    from hf_smallllm.errors import UsageError
    from hf_smallllm.tokenization import special_token_behaviour, tokenizer_preset, train_tokenizer

    if not args.files and args.dataset is None:
        raise UsageError("give training files (or 'bundled') or --dataset")
    preset = tokenizer_preset(args.family)
    named = {f"{n}_token": getattr(args, f"{n}_token") for n in ("bos", "eos", "pad", "unk")}
    known = set(preset.leading_special_tokens + preset.trailing_special_tokens)
    trailing = list(preset.trailing_special_tokens)
    for token in [t for t in named.values() if t] + args.special_token:
        if token not in known and token not in trailing:
            trailing.append(token)
    tokenizer = train_tokenizer(
        _training_files(args.files), args.dataset, family=args.family, vocab_size=args.vocab_size,
        output_dir=args.output_dir, text_field=args.text_field, dataset_kwargs=args.dataset_kwargs,
        max_chars=args.max_chars, progress=not args.no_progress, trailing_special_tokens=trailing,
        min_frequency=args.min_frequency, model_max_length=args.model_max_length, add_bos_token=args.add_bos,
        add_eos_token=args.add_eos, **named)
    adds_bos, adds_eos = special_token_behaviour(tokenizer)
    print(f"saved {args.output_dir}: {len(tokenizer):,} tokens ({args.family} style), bos={tokenizer.bos_token_id} "
          f"eos={tokenizer.eos_token_id} pad={tokenizer.pad_token_id} unk={tokenizer.unk_token_id}, "
          f"adds BOS: {adds_bos}, adds EOS: {adds_eos}")
    return 0


def run_inspect(args) -> int:
    from pathlib import Path

    from hf_smallllm.convert.gguf_file import check_gguf_file_complete
    from hf_smallllm.errors import UsageFileNotFoundError
    from hf_smallllm.tokenization import load_tokenizer, special_token_behaviour

    if not Path(args.path).exists() and (args.path.startswith((".", "/", "~")) or args.path.count("/") > 1):
        raise UsageFileNotFoundError(f"{args.path}: no such folder")
    path, gguf_file, option = args.path, args.gguf_file, "--gguf-file"
    if gguf_file is None and Path(path).is_file() and Path(path).suffix == ".gguf":  # PATH names the file itself
        path, gguf_file, option = str(Path(path).parent), path, None
    if gguf_file is not None:  # a path, or a name in PATH; its bytes are checked before any reader trusts them
        location = next((c for c in (Path(gguf_file), Path(path) / gguf_file) if c.exists()), None)
        if location is None:
            raise UsageFileNotFoundError(f"--gguf-file {gguf_file}: no such file (neither a path nor in {path})")
        check_gguf_file_complete(location, option=option)
        gguf_file = str(location)
    try:
        tokenizer = load_tokenizer(path, gguf_file)
    except OSError as err:  # a missing folder or file, or a Hub id that cannot be reached
        raise UsageFileNotFoundError(f"cannot load a tokenizer from {args.path!r}: {' '.join(str(err).split())[:300]}"
                                     ) from None
    adds_bos, adds_eos = special_token_behaviour(tokenizer)
    print(f"{args.path}: {type(tokenizer).__name__}, {len(tokenizer):,} tokens, model_max_length "
          f"{tokenizer.model_max_length:,}")
    for name in ("bos", "eos", "pad", "unk"):
        print(f"  {name}: {getattr(tokenizer, f'{name}_token')!r} id {getattr(tokenizer, f'{name}_token_id')}")
    extra = [(t, tokenizer.convert_tokens_to_ids(t)) for t in tokenizer.extra_special_tokens]
    if extra:
        print("  extra special tokens: " + ", ".join(f"{t!r} {i}" for t, i in extra))
    print(f"  adds BOS: {adds_bos}, adds EOS: {adds_eos}")
    ids = tokenizer(args.text)["input_ids"]
    print(f"  text ({len(args.text)} chars) -> {len(ids)} tokens, {len(args.text) / max(len(ids), 1):.2f} chars/token")
    print("  " + " | ".join(tokenizer.convert_ids_to_tokens(ids)))
    print("  ids: " + " ".join(map(str, ids)))
    return 0
