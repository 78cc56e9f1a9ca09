"""Small real tokenizers and a seconds-long training loop for the evaluation tests: tiny models that have learnt
something from the bundled corpus, so that losses differ by domain and memorised text shows."""

import contextlib
import json
from pathlib import Path

import torch

from hf_smallllm import FAMILIES, preset_config

CORPUS = Path(__file__).parents[2] / "hf_smallllm" / "resources" / "corpus"
BENCHMARKS = Path(__file__).parents[2] / "hf_smallllm" / "resources" / "benchmarks"


def bpe_tokenizer(vocab_size: int):
    """A byte-level BPE tokenizer trained on slices of the bundled English, Chinese and code text; `<unk>` 0,
    `<s>` 1, `</s>` 2 (also padding)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [
        (CORPUS / "en_shakespeare.txt").read_text(encoding="utf-8")[:120_000],
        (CORPUS / "en_kjv.txt").read_text(encoding="utf-8")[:60_000],
        (CORPUS / "en_pydoc.txt").read_text(encoding="utf-8")[:40_000],
        (CORPUS / "zh_poetry.jsonl").read_text(encoding="utf-8")[:60_000],
        (CORPUS / "code_python.jsonl").read_text(encoding="utf-8")[:60_000],
    ]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")


def corpus_documents(chars_per_file: int = 60_000) -> list[str]:
    """Training text from every bundled training file (never the validation files)."""
    documents = []
    for name in ("en_shakespeare.txt", "en_kjv.txt", "en_pydoc.txt"):
        text = (CORPUS / name).read_text(encoding="utf-8")[:chars_per_file]
        documents += [text[i : i + 2000] for i in range(0, len(text), 2000)]
    for name in ("zh_poetry.jsonl", "code_python.jsonl"):
        size = 0
        for line in (CORPUS / name).read_text(encoding="utf-8").splitlines():
            text = json.loads(line)["text"]
            documents.append(text)
            size += len(text)
            if size >= chars_per_file:
                break
    return documents


@contextlib.contextmanager
def single_thread():
    """Tiny models are fastest on one thread; on a shared 2-core machine more threads only oversubscribe."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_tiny_lm(tokenizer, documents: list[str], *, steps: int, family: str = "tinyllama", seq_len: int = 128,
                  batch_size: int = 8, lr: float = 3e-3, seed: int = 0, max_position_embeddings: int = 512):
    """A tiny model of `family` trained for `steps` AdamW steps on random windows of `documents` (EOS between them),
    returned in eval mode."""
    eos = tokenizer.eos_token_id
    stream = []
    for ids in tokenizer(documents, add_special_tokens=False)["input_ids"]:
        stream += ids + [eos]
    data = torch.tensor(stream)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    config = preset_config(family, "tiny", vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                           max_position_embeddings=max_position_embeddings)
    model = FAMILIES[family].causal_lm_class(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20) * (1 - s / (steps + 1)))
    model.train()
    with single_thread():
        for _ in range(steps):
            starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=generator)
            batch = torch.stack([data[s : s + seq_len] for s in starts.tolist()])
            model(input_ids=batch, labels=batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
    return model.eval()


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
