"""Encoding throughput and compression of tokenizers trained by `hf_smallllm.tokenization`, against the real GPT-2
tokenizer from the same library (`tokenizers`, Rust) on the same text, measured in the same process.

The text is the bundled validation corpus (English plays, Bible verses, Python docs, Classical Chinese poetry,
Python code), cut into documents of about `--doc-chars` characters and encoded in batches of `--batch-size` through
`tokenizer(batch)` (what a data pipeline calls). Throughput is UTF-8 megabytes per second, best of `--repeats`;
compression is characters per token per language. GPT-2's files come from tests/fixtures/tokenizers/gpt2 (the real
50,257-entry vocabulary). `tiktoken` is added as a second reference when it is installed and works offline.

    python -m benchmarks.tokenizer_throughput                  # ~1 minute on 2 CPU cores
    python -m benchmarks.tokenizer_throughput --quick          # seconds; small vocabularies, one repeat

Writes `tokenizer_throughput.json` and `tokenizer_throughput.md` to --output-dir.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

from hf_smallllm.resources import CORPUS
from hf_smallllm.tokenization import iter_training_texts, load_tokenizer, train_tokenizer

GPT2_FILES = Path(__file__).parents[1] / "tests" / "fixtures" / "tokenizers" / "gpt2"
LANGUAGES = {
    "english": ["en_shakespeare.txt", "en_kjv.txt", "en_pydoc.txt"],
    "chinese": ["zh_poetry.jsonl"],
    "code": ["code_python.jsonl"],
}
TRAIN_FILES = [str(p) for p in sorted(CORPUS.glob("*")) if p.is_file() and p.name != "README.md"]


def documents(language: str, doc_chars: int) -> list[str]:
    files = [str(CORPUS / "validation" / name) for name in LANGUAGES[language]]
    docs = []
    for text in iter_training_texts(files, chunk_chars=doc_chars, progress=False):
        docs.extend(text[i:i + doc_chars] for i in range(0, len(text), doc_chars))
    return docs


def throughput(encode_batch, docs: list[str], batch_size: int, repeats: int) -> float:
    size = sum(len(d.encode("utf-8")) for d in docs)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(docs), batch_size):
            encode_batch(docs[i:i + batch_size])
        best = min(best, time.perf_counter() - start)
    return size / best / 1e6


def tiktoken_reference():
    try:
        import tiktoken

        encoding = tiktoken.get_encoding("cl100k_base")  # fails offline unless the files ship with the package
    except Exception:  # noqa: BLE001 - any failure means "not available here"
        return None
    return lambda batch: encoding.encode_ordinary_batch(batch)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab-size", type=int, default=32000, help="vocabulary of the trained tokenizers")
    parser.add_argument("--families", default="chuxin,btlm,tinyllama", help="trained tokenizer styles to measure")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--doc-chars", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="vocab 2048, one repeat")
    parser.add_argument("--output-dir", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.quick:
        args.vocab_size, args.repeats = 2048, 1

    corpus = {language: documents(language, args.doc_chars) for language in LANGUAGES}
    every_doc = [doc for docs in corpus.values() for doc in docs]
    tokenizers = {"gpt2 (reference)": load_tokenizer(GPT2_FILES)}
    train_seconds = {}
    for family in args.families.split(","):
        start = time.perf_counter()
        tokenizers[f"{family}-style {args.vocab_size}"] = train_tokenizer(
            TRAIN_FILES, family=family, vocab_size=args.vocab_size, progress=False)
        train_seconds[family] = time.perf_counter() - start

    rows = []
    for name, tokenizer in tokenizers.items():
        encode = lambda batch, t=tokenizer: t(batch, add_special_tokens=False)["input_ids"]  # noqa: E731
        row = {"tokenizer": name, "size": len(tokenizer),
               "mb_per_s": throughput(encode, every_doc, args.batch_size, args.repeats)}
        for language, docs in corpus.items():
            text = "".join(docs)
            row[f"chars_per_token/{language}"] = len(text) / len(tokenizer(text, add_special_tokens=False,
                                                                             verbose=False)["input_ids"])
        rows.append(row)
    tiktoken_encode = tiktoken_reference()
    if tiktoken_encode is not None:
        rows.append({"tokenizer": "tiktoken cl100k_base", "size": 100256,
                     "mb_per_s": throughput(tiktoken_encode, every_doc, args.batch_size, args.repeats)})
    reference = rows[0]["mb_per_s"]
    for row in rows:
        row["speed_vs_gpt2"] = row["mb_per_s"] / reference

    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    meta = {"vocab_size": args.vocab_size, "batch_size": args.batch_size, "doc_chars": args.doc_chars,
            "repeats": args.repeats, "documents": len(every_doc),
            "megabytes": sum(len(d.encode("utf-8")) for d in every_doc) / 1e6, "train_seconds": train_seconds,
            "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine()}
    (output / "tokenizer_throughput.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2),
                                                      encoding="utf-8")
    lines = ["| tokenizer | entries | MB/s (batched) | vs GPT-2 | chars/token EN | ZH | code |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        ratios = " | ".join(f"{row[f'chars_per_token/{lang}']:.2f}" if f"chars_per_token/{lang}" in row else "-"
                            for lang in LANGUAGES)
        lines.append(f"| {row['tokenizer']} | {row['size']:,} | {row['mb_per_s']:.2f} | {row['speed_vs_gpt2']:.2f} | "
                     f"{ratios} |")
    table = "\n".join(lines)
    (output / "tokenizer_throughput.md").write_text(table + "\n", encoding="utf-8")
    print(f"{meta['megabytes']:.2f} MB in {len(every_doc)} documents, batch {args.batch_size}; "
          f"training seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in train_seconds.items()))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
