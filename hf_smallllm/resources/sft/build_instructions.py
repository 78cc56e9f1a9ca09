#!/usr/bin/env python
"""Rebuild the bundled instruction set (instructions.jsonl, instructions_alpaca.jsonl) deterministically.

Every sample is generated here from templates written for this project, arithmetic, and the bundled public-domain
/ MIT corpus (King James Bible verses, Tang/Song poems' titles, authors and first lines); see README.md.
Run from the repository root:  python hf_smallllm/resources/sft/build_instructions.py
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
CORPUS = HERE.parent / "corpus"
SYSTEM_EN = "You are a concise assistant. Answer in one sentence."
SYSTEM_ZH = "你是一个简洁的助手，用一句话回答。"
BOOKS = {"Ge": "Genesis", "Ex": "Exodus", "Le": "Leviticus", "Nu": "Numbers", "De": "Deuteronomy"}


def arithmetic(rng):
    a, b = rng.randint(2, 49), rng.randint(2, 49)
    if rng.random() < 0.5:
        return [{"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]
    return [{"role": "user", "content": f"{a}加{b}等于多少？"},
            {"role": "assistant", "content": f"{a}加{b}等于{a + b}。"}]


def arithmetic_multi_turn(rng):
    a, b, c = rng.randint(2, 20), rng.randint(2, 20), rng.randint(2, 5)
    if rng.random() < 0.5:
        return [{"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
                {"role": "user", "content": f"And that times {c}?"},
                {"role": "assistant", "content": f"{a + b} times {c} is {(a + b) * c}."}]
    return [{"role": "user", "content": f"{a}加{b}等于多少？"},
            {"role": "assistant", "content": f"{a}加{b}等于{a + b}。"},
            {"role": "user", "content": f"再乘以{c}呢？"},
            {"role": "assistant", "content": f"{a + b}乘以{c}等于{(a + b) * c}。"}]


def uppercase(rng, lines):
    line = rng.choice(lines)
    words = " ".join(line.split()[:6]).strip(",.;:")
    return [{"role": "user", "content": f"Write this in capital letters: {words}"},
            {"role": "assistant", "content": words.upper()}]


def verse(rng, verses):
    ref, text = rng.choice(verses)
    book, chapter_verse = BOOKS[ref[:2]], ref[2:]
    return [{"role": "user", "content": f"Quote {book} {chapter_verse} from the King James Bible."},
            {"role": "assistant", "content": text}]


def poem(rng, poems):
    item = rng.choice(poems)
    first = item["text"].split("\n")[0].strip()
    if rng.random() < 0.5:
        return [{"role": "user", "content": f"《{item['title']}》的作者是谁？"},
                {"role": "assistant", "content": f"《{item['title']}》的作者是{item['author']}。"}]
    return [{"role": "user", "content": f"《{item['title']}》的第一句是什么？"},
            {"role": "assistant", "content": first}]


def load_verses(corpus=CORPUS) -> list[tuple[str, str]]:
    """(reference, text) of the KJV verses of Genesis-Deuteronomy with 20-120 characters."""
    verses = []
    for line in (corpus / "en_kjv.txt").read_text(encoding="utf-8").splitlines():
        ref, _, text = line.partition(" ")
        if ref[:2] in BOOKS and 20 <= len(text) <= 120:
            verses.append((ref, text))
    return verses


def load_poems(corpus=CORPUS) -> list[dict]:
    """Poems with a title, an author and a first line of 5-40 characters."""
    poems = []
    for line in (corpus / "zh_poetry.jsonl").read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        first = item["text"].split("\n")[0].strip()
        if item["author"] and item["title"] and 5 <= len(first) <= 40:
            poems.append(item)
    return poems


def main():
    rng = random.Random(20260101)
    verses = load_verses()
    lines = [v[1] for v in verses]
    poems = load_poems()
    makers = [(arithmetic, ()), (arithmetic_multi_turn, ()), (uppercase, (lines,)), (verse, (verses,)),
              (poem, (poems,))]
    records = []
    for index in range(480):
        make, extra = makers[index % len(makers)]
        messages = make(rng, *extra)
        if index % 7 == 0:
            zh = any("\u4e00" <= ch <= "\u9fff" for ch in messages[0]["content"])
            messages = [{"role": "system", "content": SYSTEM_ZH if zh else SYSTEM_EN}] + messages
        records.append({"messages": messages})
    with open(HERE / "instructions.jsonl", "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    with open(HERE / "instructions_alpaca.jsonl", "w", encoding="utf-8") as f:
        for index in range(60):
            a, b = rng.randint(2, 49), rng.randint(2, 49)
            if index % 2:
                row = {"instruction": "Add the two numbers.", "input": f"{a} and {b}", "output": f"{a + b}"}
            else:
                ref, text = rng.choice(verses)
                row = {"instruction": "Repeat the verse in capital letters.", "input": text, "output": text.upper()}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
