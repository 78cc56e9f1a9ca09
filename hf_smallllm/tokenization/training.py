"""Training a family's kind of tokenizer with the `tokenizers` library, from local files or a `datasets` dataset.

Text is streamed: plain text files are read in chunks of whole lines (newlines kept, they matter to byte-level
BPE), JSONL/Parquet records and `datasets` rows one by one through `DocumentSource`, so memory is bounded by the
BPE trainer's word counts, not by the corpus. A tqdm bar counts the characters read (and the bytes of the files,
when the source is files). The result is a `PreTrainedTokenizerFast` with the family's special tokens, id layout and
BOS/EOS behaviour (see presets.py); `save_pretrained` output loads with `AutoTokenizer.from_pretrained`.
"""

import json
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, trainers
from tokenizers import pre_tokenizers as pt

from ..errors import UsageFileNotFoundError, UsageValueError
from ..runfiles import atomic_folder
from .pipelines import BYTE_TOKENS, byte_level_pipeline, sentencepiece_pipeline
from .presets import TokenizerPreset, tokenizer_preset

TEXT_CHUNK_CHARS = 1 << 20  # plain text files reach the trainer in pieces of about 1 M characters


def _is_text_file(path: Path) -> bool:
    name = path.name.lower()
    return not name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet"))


def _text_file_chunks(path: Path, chunk_chars: int, progress) -> Iterator[str]:
    opener = __import__("gzip").open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(
        path, encoding="utf-8")
    with opener as handle:
        lines: list[str] = []
        size = 0
        for line in handle:
            lines.append(line)
            size += len(line)
            if size >= chunk_chars:
                progress.update(len("".join(lines).encode("utf-8")))
                yield "".join(lines)
                lines, size = [], 0
        if lines:
            progress.update(len("".join(lines).encode("utf-8")))
            yield "".join(lines)


def _expand_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    import glob

    files: list[Path] = []
    for pattern in paths:
        pattern = str(pattern)
        if pattern.startswith("bundled:"):
            from ..resources import corpus_path

            files.append(corpus_path(pattern.removeprefix("bundled:")))
            continue
        path = Path(pattern).expanduser()
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and p.name != "README.md")
        else:
            matches = [Path(m) for m in sorted(glob.glob(str(path), recursive=True)) if Path(m).is_file()]
        if not matches:
            raise UsageFileNotFoundError(f"no training file matches {pattern!r}")
        files.extend(matches)
    return files


def iter_training_texts(
    paths: Iterable[str | os.PathLike] = (),
    dataset: Any = None,
    *,
    text_field: str = "text",
    dataset_kwargs: dict | None = None,
    max_chars: int | None = None,
    chunk_chars: int = TEXT_CHUNK_CHARS,
    progress: bool = True,
) -> Iterator[str]:
    """Texts for tokenizer training, streamed.

    `paths`: files, folders (all files below) or glob patterns; `bundled:<name>` names a bundled corpus file.
    `.txt` (any other suffix) is plain text, `.jsonl`/`.json`/`.parquet` hold records whose `text_field` is the text.
    `dataset`: a `datasets` name or builder ("json", "parquet", ...) loaded with `streaming=True` and
    `dataset_kwargs` (e.g. `{"split": "train", "data_files": ...}`), or an already loaded (Iterable)Dataset.
    `max_chars`: stop after about this many characters (a sample of a large corpus).
    """
    from tqdm.auto import tqdm

    from ..data.documents import DocumentSource

    paths = list(paths)
    if not paths and dataset is None:
        raise ValueError("give training files (paths) or a dataset")
    files = _expand_paths(paths)
    total = sum(f.stat().st_size for f in files) if dataset is None else None
    unit = "B" if dataset is None else "doc"
    seen = 0
    with tqdm(total=total, unit=unit, unit_scale=True, desc="reading text", disable=not progress) as bar:
        def limited(texts: Iterable[str]) -> Iterator[str]:
            nonlocal seen
            for text in texts:
                if max_chars is not None and seen + len(text) > max_chars:
                    text = text[: max(max_chars - seen, 0)]
                if text:
                    seen += len(text)
                    yield text
                if max_chars is not None and seen >= max_chars:
                    return

        class _RecordBar:  # records advance the bar by their UTF-8 size (files) or by one (dataset rows)
            def __init__(self, by_bytes: bool):
                self.by_bytes = by_bytes

            def wrap(self, texts):
                for text in texts:
                    bar.update(len(text.encode("utf-8")) if self.by_bytes else 1)
                    yield text

        done_bytes = 0
        for path in files:
            if _is_text_file(path):
                chunks = _text_file_chunks(path, chunk_chars, bar)
            else:
                source = DocumentSource(name=path.name, paths=[str(path)], text_field=text_field)
                chunks = _RecordBar(by_bytes=True).wrap(source.iter_documents())
            yield from limited(chunks)
            if max_chars is not None and seen >= max_chars:
                return
            done_bytes += path.stat().st_size  # records count text bytes; the bar ends at the files' real size
            bar.n = done_bytes
            bar.refresh()
        if dataset is not None:
            source = DocumentSource(name="dataset", dataset=dataset, text_field=text_field,
                                    dataset_kwargs=dict(dataset_kwargs or {}), streaming=True)
            yield from limited(_RecordBar(by_bytes=False).wrap(source.iter_documents()))


def _untrained_pipeline(preset: TokenizerPreset) -> Tokenizer:
    if preset.kind == "byte_level":
        return byte_level_pipeline(preset.pre_tokenizer, preset.split_digits)
    return sentencepiece_pipeline(preset.unk_token, preset.split_digits)


def _trainer(preset: TokenizerPreset, show_progress: bool):
    if preset.kind == "byte_level":
        return trainers.BpeTrainer(
            vocab_size=preset.vocab_size, min_frequency=preset.min_frequency,
            special_tokens=list(preset.leading_special_tokens), initial_alphabet=pt.ByteLevel.alphabet(),
            show_progress=show_progress)
    learned = preset.vocab_size - len(preset.leading_special_tokens) - len(BYTE_TOKENS)
    return trainers.BpeTrainer(
        vocab_size=preset.vocab_size, min_frequency=preset.min_frequency,
        special_tokens=list(preset.leading_special_tokens) + BYTE_TOKENS,
        limit_alphabet=max(16, int(learned * preset.alphabet_share)), show_progress=show_progress)


def _finish(tokenizer: Tokenizer, preset: TokenizerPreset) -> Tokenizer:
    """Byte tokens are ordinary vocabulary entries (as in Llama-2), not added tokens: text "<0x41>" must tokenize as
    text. The trailing specials are appended after the learned entries."""
    if preset.kind == "sentencepiece_bpe":
        state = json.loads(tokenizer.to_str())
        byte_tokens = set(BYTE_TOKENS)
        state["added_tokens"] = [t for t in state["added_tokens"] if t["content"] not in byte_tokens]
        tokenizer = Tokenizer.from_str(json.dumps(state))
    learned = tokenizer.get_vocab_size(with_added_tokens=True)
    if learned < preset.vocab_size:
        warnings.warn(f"the training text only supported {learned:,} of the requested {preset.vocab_size:,} "
                      "vocabulary entries (no pair left that occurs min_frequency times); trailing special tokens "
                      f"start at id {learned}", stacklevel=3)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                  for t in preset.trailing_special_tokens])
    return tokenizer


def to_transformers(tokenizer: Tokenizer, preset: TokenizerPreset):
    """Wrap a trained `tokenizers.Tokenizer` as a `PreTrainedTokenizerFast` with the preset's special tokens and
    BOS/EOS behaviour (a TemplateProcessing post-processor, saved and restored through tokenizer_config.json)."""
    from transformers import PreTrainedTokenizerFast

    specials = set(preset.leading_special_tokens + preset.trailing_special_tokens)
    named = {preset.bos_token, preset.eos_token, preset.pad_token, preset.unk_token}
    extra = [t for t in preset.leading_special_tokens + preset.trailing_special_tokens if t not in named]
    assert named - {None} <= specials
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=preset.bos_token, eos_token=preset.eos_token,
        pad_token=preset.pad_token, unk_token=preset.unk_token, extra_special_tokens=extra,
        add_bos_token=preset.add_bos_token, add_eos_token=preset.add_eos_token,
        model_max_length=preset.model_max_length, clean_up_tokenization_spaces=False)


def train_tokenizer(
    paths: Iterable[str | os.PathLike] = (),
    dataset: Any = None,
    *,
    family: str = "chuxin",
    vocab_size: int | None = None,
    output_dir: str | os.PathLike | None = None,
    text_field: str = "text",
    dataset_kwargs: dict | None = None,
    max_chars: int | None = None,
    progress: bool = True,
    texts: Iterable[str] | None = None,
    **preset_overrides,
):
    """Train `family`'s kind of tokenizer and return it as a `PreTrainedTokenizerFast`.

    Text comes from `paths` / `dataset` (see `iter_training_texts`) or from an iterable of strings `texts`.
    `vocab_size` and any `TokenizerPreset` field (`bos_token`, `trailing_special_tokens`, `add_bos_token`,
    `model_max_length`, `min_frequency`, `split_digits`, ...) override the family preset. When `output_dir` is given
    the tokenizer is saved there with `save_pretrained` (written to a temporary folder, then renamed: an existing
    folder is replaced only once the new one is complete).
    """
    preset = tokenizer_preset(family, vocab_size=vocab_size, **preset_overrides)
    paths = list(paths)
    if texts is None:
        texts = iter_training_texts(paths, dataset, text_field=text_field, dataset_kwargs=dataset_kwargs,
                                    max_chars=max_chars, progress=progress)
    elif paths or dataset is not None:
        raise ValueError("give either texts or paths/dataset, not both")
    tokenizer = _untrained_pipeline(preset)
    seen = {"chars": 0}

    def counted(stream):
        for text in stream:
            seen["chars"] += len(text)
            yield text

    # The trainer's own bar would interleave with the reading bar; ours shows reading, merging is the short part.
    tokenizer.train_from_iterator(counted(texts), _trainer(preset, show_progress=False))
    if not seen["chars"]:
        # a tokenizer of only bytes and special tokens would be saved, with nothing learned
        source = ", ".join(str(p) for p in paths or []) or (dataset if dataset is not None else "the given texts")
        raise UsageValueError(f"no training text in {source}: the corpus is empty (check the paths, --text-field "
                              "and --max-chars)")
    fast = to_transformers(_finish(tokenizer, preset), preset)
    if output_dir is not None:
        save_tokenizer(fast, output_dir)
    return fast


def save_tokenizer(tokenizer, output_dir: str | os.PathLike) -> Path:
    """`save_pretrained` into a temporary sibling folder, then rename it to `output_dir` (replacing an old one only
    after the new one is complete)."""
    with atomic_folder(output_dir) as staging:
        tokenizer.save_pretrained(staging)
    return Path(output_dir)


__all__ = ["iter_training_texts", "save_tokenizer", "to_transformers", "train_tokenizer"]
