"""A self-contained demonstration that the contamination check flags leaked test data: two tiny models trained from
scratch on the bundled corpus, one of them with part of a benchmark's test split mixed into its training text.

Everything is local and takes well under a minute on one CPU core: a byte-level BPE tokenizer trained with the
`tokenizers` library on the bundled corpus, a tiny TinyLlama-shaped model (`preset_config("tinyllama", "tiny")`),
and a plain AdamW loop over random windows of the training stream. The QA sets are the shipped MMLU
`miscellaneous` splits (`resources/benchmarks/contamination/`, three disjoint thirds of one subject, see
`benchmark_data.py`). The clean model sees only the corpus, so its delta1 and delta2 stay near zero; the
contaminated model also sees the first `leak_fraction` of the test records `leak_repeats` times, which makes the
test split markedly easier than the reference split (delta1 well below zero) and than the train split (delta2 well
above zero). `hf-smallllm eval contamination-demo` runs it and prints both reports.
"""

import contextlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from ..resources import CORPUS, RESOURCES
from .contamination import ContaminationReport, contamination_check, load_qa_texts

QA_SETS = RESOURCES / "benchmarks" / "contamination"
QA_SUBJECT = "mmlu_miscellaneous"
CORPUS_FILES = ("en_shakespeare.txt", "en_kjv.txt", "en_pydoc.txt", "zh_poetry.jsonl", "code_python.jsonl")


def qa_split_paths(subject: str = QA_SUBJECT, folder: str | Path = QA_SETS) -> dict[str, Path]:
    """{"train", "test", "reference"} -> the JSON-lines files of one shipped QA subject."""
    return {split: Path(folder) / f"{subject}_{split}.jsonl" for split in ("train", "test", "reference")}


def corpus_documents(chars_per_file: int = 60_000) -> list[str]:
    """Training documents from the start of every bundled training file (never the validation files): plain text
    in 2,000-character pieces, JSON lines one record a document."""
    documents = []
    for name in CORPUS_FILES:
        path = CORPUS / name
        if name.endswith(".jsonl"):
            size = 0
            for line in path.read_text(encoding="utf-8").splitlines():
                text = json.loads(line)["text"]
                documents.append(text)
                size += len(text)
                if size >= chars_per_file:
                    break
        else:
            text = path.read_text(encoding="utf-8")[:chars_per_file]
            documents += [text[i : i + 2000] for i in range(0, len(text), 2000)]
    return documents


def corpus_bpe_tokenizer(vocab_size: int = 512, chars_per_file: int = 60_000):
    """A byte-level BPE tokenizer trained on the bundled corpus (`<unk>` 0, `<s>` 1, `</s>` 2, which also pads)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus_documents(chars_per_file), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")


@contextlib.contextmanager
def _threads(count: int | None):
    # Tiny models run fastest on one thread; more only oversubscribe a shared machine.
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_tiny_lm(tokenizer, documents: list[str], *, steps: int, family: str = "tinyllama", seq_len: int = 128,
                  batch_size: int = 8, lr: float = 3e-3, seed: int = 0, max_position_embeddings: int = 512,
                  threads: int | None = 1, progress: bool = False):
    """A tiny (`"tiny"` preset) model of `family` trained from scratch for `steps` AdamW steps on random windows of
    the documents joined with EOS; returned in eval mode."""
    from tqdm.auto import tqdm

    from ..families import FAMILIES, preset_config

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    eos = tokenizer.eos_token_id
    stream = []
    for ids in tokenizer(list(documents), add_special_tokens=False)["input_ids"]:
        stream += ids + [eos]
    if len(stream) <= seq_len + 1:
        raise ValueError(f"{len(stream)} training tokens is too little for windows of {seq_len}")
    data = torch.tensor(stream)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    config = preset_config(family, "tiny", vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                           max_position_embeddings=max_position_embeddings)
    model = FAMILIES[family].causal_lm_class(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    # Linear warm-up over 20 steps, then linear decay to zero.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20) * (1 - s / (steps + 1)))
    model.train()
    with _threads(threads):
        for _ in tqdm(range(steps), desc="train tiny model", disable=not progress):
            starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=generator)
            batch = torch.stack([data[s : s + seq_len] for s in starts.tolist()])
            model(input_ids=batch, labels=batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
    return model.eval()


def leaked_documents(test_texts: list[str], leak_fraction: float, repeats: int, seed: int = 0) -> list[str]:
    """The first `leak_fraction` of the test samples, `repeats` times each, in a seeded shuffled order."""
    if not 0 < leak_fraction <= 1 or repeats < 1:
        raise ValueError(f"need 0 < leak_fraction <= 1 and repeats >= 1, got {leak_fraction} and {repeats}")
    leaked = test_texts[: max(1, round(len(test_texts) * leak_fraction))] * repeats
    random.Random(seed).shuffle(leaked)
    return leaked


@dataclass(frozen=True)
class ContaminationDemo:
    clean: ContaminationReport
    contaminated: ContaminationReport
    leaked_samples: int
    test_samples: int

    def to_markdown(self) -> str:
        return (f"## Clean model (bundled corpus only)\n\n{self.clean.to_markdown()}\n\n"
                f"## Contaminated model (corpus + {self.leaked_samples} of {self.test_samples} test samples)\n\n"
                f"{self.contaminated.to_markdown()}")

    def to_dict(self) -> dict:
        return {"clean": self.clean.to_dict(), "contaminated": self.contaminated.to_dict(),
                "leaked_samples": self.leaked_samples, "test_samples": self.test_samples}


def demonstrate_contamination(*, steps: int = 300, leak_fraction: float = 0.5, leak_repeats: int = 16,
                              seed: int = 0, tokenizer=None, clean_model=None, threshold: float = 0.1,
                              min_z: float = 2.0, progress: bool = False) -> ContaminationDemo:
    """Train a clean and a contaminated tiny model the same way (same tokenizer, seed, steps) and check both on the
    shipped MMLU `miscellaneous` QA splits. `tokenizer` / `clean_model` reuse ones already made (the clean model
    must have been trained with `train_tiny_lm(tokenizer, corpus_documents(), steps=steps, seed=seed)`)."""
    tokenizer = tokenizer or corpus_bpe_tokenizer()
    texts = {split: load_qa_texts(path) for split, path in qa_split_paths().items()}
    corpus = corpus_documents()
    if clean_model is None:
        clean_model = train_tiny_lm(tokenizer, corpus, steps=steps, seed=seed, progress=progress)
    leaked = leaked_documents(texts["test"], leak_fraction, leak_repeats, seed)
    contaminated_model = train_tiny_lm(tokenizer, corpus + leaked, steps=steps, seed=seed, progress=progress)
    reports = {}
    for name, model in (("clean", clean_model), ("contaminated", contaminated_model)):
        with _threads(1):
            reports[name] = contamination_check(model, tokenizer, texts["train"], texts["test"], texts["reference"],
                                                threshold=threshold, min_z=min_z, progress=progress)
    return ContaminationDemo(reports["clean"], reports["contaminated"], len(leaked) // leak_repeats,
                             len(texts["test"]))


__all__ = [
    "ContaminationDemo",
    "corpus_bpe_tokenizer",
    "corpus_documents",
    "demonstrate_contamination",
    "leaked_documents",
    "qa_split_paths",
    "train_tiny_lm",
]
