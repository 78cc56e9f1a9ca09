"""LongEval-style line retrieval (LMSYS, "How long can open-source LLMs truly promise on context length?", 2023):
many numbered "lines", each holding a random number, then a question about one line. BTLM-3B-8K reports its long-
context behaviour on LongEval and SCROLLS; SCROLLS is in lm-eval (`scrolls_qmsum`, `scrolls_govreport`, ...,
data from the Hub), LongEval is not, so the lines task ships as a local lm-eval task on bundled data:
`smallllm_longeval_lines` (hf_smallllm/eval/lm_eval_tasks/, data in resources/benchmarks/longeval/, built by
`line_retrieval_records` below and checked against it in tests/longctx/test_longeval.py).

Each record: `context` (the lines), `question`, `answer` (the number), `num_lines`, `target_line`. Line names are
two random words, as in LongEval, drawn from a fixed list, so records are reproducible from the seed alone.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

WORDS = ("amber", "brisk", "cedar", "dusky", "ember", "fable", "gusty", "hazel", "ivory", "jolly", "karst", "lunar",
         "maple", "noble", "ochre", "pearl", "quill", "raven", "sable", "tidal", "umber", "vivid", "willow", "yonder",
         "zephyr", "arbor", "bluff", "coral", "delta", "flint", "glade", "heron", "inlet", "juniper", "kestrel",
         "lilac", "marsh", "nectar", "orchid", "prairie")
PREAMBLE = "Below is a record of lines I want you to remember. Each line begins with 'line <name>' and holds a number."
QUESTION = "Now the record is over. What is the number in line {name}? The number in line {name} is"
LINE_COUNTS = (20, 50, 100)  # ~ 400, 1,000 and 2,000 tokens with a byte-level BPE: the bundled, CPU-sized lengths
RECORDS_PER_COUNT = 5
SEED = 2023


def line_retrieval_records(line_counts: Sequence[int] = LINE_COUNTS, per_count: int = RECORDS_PER_COUNT,
                           seed: int = SEED) -> list[dict]:
    """Records of the lines task: for each line count, `per_count` records with a target line drawn uniformly."""
    rng = random.Random(seed)
    records = []
    for count in line_counts:
        if count < 1 or count > len(WORDS) ** 2:
            raise ValueError(f"line count {count} must be in [1, {len(WORDS) ** 2}]")
        for _ in range(per_count):
            names = rng.sample([f"{a}-{b}" for a in WORDS for b in WORDS if a != b], count)
            numbers = [rng.randrange(10000, 100000) for _ in names]
            target = rng.randrange(count)
            lines = [f"line {name}: REGISTER_CONTENT is <{number}>" for name, number in zip(names, numbers,
                                                                                             strict=True)]
            records.append({"context": PREAMBLE + "\n" + "\n".join(lines), "question": QUESTION.format(
                name=names[target]), "answer": str(numbers[target]), "num_lines": count, "target_line": target})
    return records


def write_line_retrieval_data(folder: str | Path) -> Path:
    """`lines_test.jsonl` in `folder` (the bundled file is this function's output), written atomically."""
    from ..runfiles import write_text_atomic

    path = Path(folder) / "lines_test.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in line_retrieval_records()))
    return path


__all__ = ["LINE_COUNTS", "line_retrieval_records", "write_line_retrieval_data"]
