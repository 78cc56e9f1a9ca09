"""Small real tokenizers and a seconds-long training loop for the evaluation tests (the library's own, from
`hf_smallllm.eval.contamination_demo`): tiny models that have learnt something from the bundled corpus, so that
losses differ by domain and memorised text shows."""

import contextlib
import json
from pathlib import Path

import torch

from hf_smallllm.eval.contamination_demo import corpus_bpe_tokenizer, corpus_documents, train_tiny_lm

CORPUS = Path(__file__).parents[2] / "hf_smallllm" / "resources" / "corpus"
BENCHMARKS = Path(__file__).parents[2] / "hf_smallllm" / "resources" / "benchmarks"


@contextlib.contextmanager
def single_thread():
    """Tiny models are fastest on one thread; on a shared 2-core machine more threads only oversubscribe."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


__all__ = ["BENCHMARKS", "CORPUS", "corpus_bpe_tokenizer", "corpus_documents", "read_jsonl", "single_thread",
           "train_tiny_lm"]
