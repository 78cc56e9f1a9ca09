#!/usr/bin/env python
"""Rebuild the bundled preference set (preferences.jsonl) deterministically.

Each record pairs a correct reply (chosen) with a plausible wrong one (rejected) for a prompt made by the same
generators as the instruction set (`build_instructions.py`): arithmetic with an off-by-a-little sum, upper-casing
answered without capitals, a KJV verse answered with a different verse, a poem's author or first line answered with
another poem's. Everything comes from templates written for this project, arithmetic and the bundled corpus; see
README.md. Run from the repository root:  python hf_smallllm/resources/sft/build_preferences.py
"""

import json
import random

from build_instructions import CORPUS, HERE, SYSTEM_EN, SYSTEM_ZH, load_poems, load_verses


def arithmetic(rng):
    a, b = rng.randint(2, 49), rng.randint(2, 49)
    wrong = a + b + rng.choice([-3, -2, -1, 1, 2, 3, 10])
    if rng.random() < 0.5:
        return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.", f"{a} plus {b} is {wrong}."
    return f"{a}加{b}等于多少？", f"{a}加{b}等于{a + b}。", f"{a}加{b}等于{wrong}。"


def uppercase(rng, verses):
    words = " ".join(rng.choice(verses)[1].split()[:6]).strip(",.;:")
    return f"Write this in capital letters: {words}", words.upper(), words.lower()


def verse(rng, verses, books):
    (ref, text), (_, other) = rng.sample(verses, 2)
    return f"Quote {books[ref[:2]]} {ref[2:]} from the King James Bible.", text, other


def poem(rng, poems):
    item, other = rng.sample(poems, 2)
    if rng.random() < 0.5 and item["author"] != other["author"]:
        return (f"《{item['title']}》的作者是谁？", f"《{item['title']}》的作者是{item['author']}。",
                f"《{item['title']}》的作者是{other['author']}。")
    first, wrong = (p["text"].split("\n")[0].strip() for p in (item, other))
    return f"《{item['title']}》的第一句是什么？", first, wrong


def main():
    from build_instructions import BOOKS

    rng = random.Random(20260202)
    verses, poems = load_verses(CORPUS), load_poems(CORPUS)
    makers = [lambda: arithmetic(rng), lambda: uppercase(rng, verses), lambda: verse(rng, verses, BOOKS),
              lambda: poem(rng, poems)]
    with open(HERE / "preferences.jsonl", "w", encoding="utf-8") as f:
        for index in range(240):
            prompt, chosen, rejected = makers[index % len(makers)]()
            if chosen == rejected:
                continue
            turns = [{"role": "user", "content": prompt}]
            if index % 6 == 0:
                zh = any("\u4e00" <= ch <= "\u9fff" for ch in prompt)
                turns.insert(0, {"role": "system", "content": SYSTEM_ZH if zh else SYSTEM_EN})
            record = {"prompt": turns, "chosen": [{"role": "assistant", "content": chosen}],
                      "rejected": [{"role": "assistant", "content": rejected}]}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
