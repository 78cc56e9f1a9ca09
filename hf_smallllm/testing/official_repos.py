"""Folders laid out file by file like the official Hub repositories, with tiny random weights, for tests and demos.

The official BTLM, Skywork and GEB repositories ship remote code (`configuration_*.py`, `modeling_*.py`,
`tokenization_*.py`) named by config.json's `auto_map`, their own tokenizer files and weights in the formats of their
time (`pytorch_model.bin`, sharded `.bin` with an index, sharded safetensors with an index). `write_official_repo`
writes the same files for a tiny package model:

- weights and config.json through the package's own exporter (`convert.package_to_official`), then re-saved in the
  requested format;
- every remote-code file is a *tripwire*: importing it writes a marker file and raises, so a test proves the
  repository's code never ran (`tripwire_fired`);
- SentencePiece families get a `tokenizer.model` trained here with the `sentencepiece` library on the bundled corpus
  (English, Chinese poetry and Python code), named as the family's published tokenizer_config.json names it; BTLM gets
  GPT-2's `vocab.json` + `merges.txt` layout from a byte-level BPE trained the same way;
- a `generation_config.json` with the family's published sampling settings.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
from pathlib import Path

from ..families import FAMILIES
from ..resources import corpus_path
from .tiny_models import tiny_random_model

# Where the official repositories live, and what their tokenizer_config.json / generation_config.json say that the
# package must carry over (sources: docs/architectures.md 1.1, 2.1, 5.1).
OFFICIAL_REPOS = {name: FAMILIES[name].official.repo_id for name in ("btlm", "skywork", "geb")}
REMOTE_CODE = {
    "btlm": {"AutoConfig": "configuration_btlm.BTLMConfig", "AutoModelForCausalLM": "modeling_btlm.BTLMLMHeadModel"},
    "skywork": {"AutoConfig": "configuration_skywork.SkyworkConfig",
                "AutoModelForCausalLM": "modeling_skywork.SkyworkForCausalLM"},
    "geb": {"AutoConfig": "configuration_geblm.GEBConfig", "AutoModel": "modeling_geb.GEBForCausalLM"},
}
TOKENIZER_CODE = {"skywork": "tokenization_skywork.SkyworkTokenizer", "geb": "tokenization_geb.GEBTokenizer"}
GENERATION = {
    "btlm": {"do_sample": False, "max_length": 8192},
    "skywork": {"do_sample": True, "temperature": 0.6, "top_p": 0.8, "max_new_tokens": 256},
    "geb": {"do_sample": True, "temperature": 0.3, "top_k": 5, "top_p": 0.5, "repetition_penalty": 1.15,
            "max_length": 512},
}
WEIGHT_FORMATS = ("bin", "sharded-bin", "sharded-safetensors", "safetensors")
TRIPWIRE_ENV = "HF_SMALLLLM_TRIPWIRE"


def _tripwire(name: str) -> str:
    return (f'"""Stand-in for the repository\'s {name}: running it is a bug (hf_smallllm must not)."""\n'
            "import os, pathlib\n"
            f"_marker = os.environ.get({TRIPWIRE_ENV!r})\n"
            "if _marker:\n"
            f"    pathlib.Path(_marker).write_text({name!r})\n"
            f"raise RuntimeError('MARKER: the repository file {name} was executed')\n")


def tripwire_fired(marker: str | os.PathLike) -> str | None:
    """The name of the remote-code file that ran, if any did (the marker file of `TRIPWIRE_ENV`)."""
    marker = Path(marker)
    return marker.read_text() if marker.exists() else None


def training_texts(lines: int = 4000) -> list[str]:
    """Bilingual text and code from the bundled corpus."""
    texts = corpus_path("en_shakespeare.txt").read_text(encoding="utf-8").splitlines()[:lines]
    with open(corpus_path("zh_poetry.jsonl"), encoding="utf-8") as poems:
        texts += [json.loads(line)["text"] for line in itertools.islice(poems, lines // 2)]
    with open(corpus_path("code_python.jsonl"), encoding="utf-8") as code:
        texts += [json.loads(line)["text"][:3000] for line in itertools.islice(code, lines // 20)]
    return [text for text in texts if text.strip()]


def train_sentencepiece_model(vocab_size: int = 4000) -> bytes:
    """A SentencePiece BPE model as Llama-2-style tokenizers are built (byte fallback, digits split, `<unk>` `<s>`
    `</s>` at 0-2, whitespace kept), trained on `training_texts()`."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(training_texts()), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, split_digits=True, character_coverage=0.9995 if vocab_size > 7000 else 0.98,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, remove_extra_whitespaces=False, normalization_rule_name="identity",
        allow_whitespace_only_pieces=True, num_threads=1, minloglevel=2)
    return model.getvalue()


def write_official_tokenizer(family: str, folder: Path, sentencepiece_model: bytes | None = None) -> None:
    """The tokenizer files of `family`'s official repository (with its remote tokenizer code as a tripwire)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    official = FAMILIES[family].official
    if official.tokenizer_class is None:  # BTLM: GPT-2's files
        from tokenizers import pre_tokenizers, trainers

        from ..tokenization.pipelines import byte_level_pipeline

        tokenizer = byte_level_pipeline("gpt2")
        tokenizer.train_from_iterator(training_texts(1500), trainers.BpeTrainer(
            vocab_size=600, special_tokens=["<|endoftext|>"], show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        state = json.loads(tokenizer.to_str())
        (folder / "vocab.json").write_text(json.dumps(state["model"]["vocab"], ensure_ascii=False), encoding="utf-8")
        merges = [" ".join(m) if isinstance(m, list) else m for m in state["model"]["merges"]]
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        (folder / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>", "model_max_length": 8192, "add_prefix_space": False}, indent=2))
        return
    (folder / official.tokenizer_model_file).write_bytes(sentencepiece_model or train_sentencepiece_model())
    module = TOKENIZER_CODE[family].split(".")[0]
    (folder / f"{module}.py").write_text(_tripwire(f"{module}.py"))
    tokenizer_config = {"tokenizer_class": official.tokenizer_class,
                        "auto_map": {"AutoTokenizer": [TOKENIZER_CODE[family], None]},
                        "add_bos_token": official.tokenizer_adds_bos, "add_eos_token": False,
                        "clean_up_tokenization_spaces": False, "model_max_length": 4096}
    if family == "skywork":
        tokenizer_config.update(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token=None,
                                sp_model_kwargs={}, legacy=True)
    else:  # GEB: the class sets its own special tokens; the file carries only the SentencePiece wrapper's options
        tokenizer_config.update(padding_side="left", remove_space=False, do_lower_case=False)
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))


def _resave_weights(folder: Path, weight_format: str, shard_bytes: int) -> None:
    """Re-save the exporter's model.safetensors in `weight_format` (shards of about `shard_bytes`)."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    if weight_format == "safetensors":
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        return
    if weight_format == "bin":
        torch.save(state, folder / "pytorch_model.bin")
        return
    shards, current, size = [], {}, 0
    for key, tensor in state.items():
        if current and size + tensor.numel() * tensor.element_size() > shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[key] = tensor
        size += tensor.numel() * tensor.element_size()
    shards.append(current)
    safetensors = weight_format == "sharded-safetensors"
    stem, suffix = ("model", "safetensors") if safetensors else ("pytorch_model", "bin")
    weight_map = {}
    for index, shard in enumerate(shards, 1):
        name = f"{stem}-{index:05d}-of-{len(shards):05d}.{suffix}"
        if safetensors:
            save_file(shard, folder / name, metadata={"format": "pt"})
        else:
            torch.save(shard, folder / name)
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index_name = "model.safetensors.index.json" if safetensors else "pytorch_model.bin.index.json"
    (folder / index_name).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                indent=2))


def write_official_repo(family: str, folder: str | os.PathLike, *, weight_format: str = "safetensors",
                        seed: int = 0, sentencepiece_model: bytes | None = None, shard_bytes: int = 40_000,
                        **config_overrides) -> Path:
    """Write a tiny random `family` model into `folder` laid out like its official repository (module docstring);
    returns the folder. `sentencepiece_model` reuses a trained model (training one takes a few seconds)."""
    from ..convert.converter import package_to_official

    if family not in OFFICIAL_REPOS:
        raise ValueError(f"{family} publishes the Llama layout (no remote code); official layouts: "
                         f"{', '.join(OFFICIAL_REPOS)}")
    if weight_format not in WEIGHT_FORMATS:
        raise ValueError(f"weight_format={weight_format!r}; choose one of {', '.join(WEIGHT_FORMATS)}")
    folder = Path(folder)
    package = folder.with_name(folder.name + ".package")
    tokenizer_files = folder.with_name(folder.name + ".tokenizer")
    write_official_tokenizer(family, tokenizer_files, sentencepiece_model)
    # the embedding matches the tokenizer, so the repository can be evaluated on text
    config_overrides.setdefault("vocab_size", _tokenizer_size(family, tokenizer_files))
    model = tiny_random_model(family, seed, **config_overrides)
    config = model.config
    model.save_pretrained(package)
    package_to_official(package, folder, verify=False, overwrite=True, progress=False)
    for path in folder.glob("*.py"):
        path.unlink()
    config_json = json.loads((folder / "config.json").read_text())
    config_json["auto_map"] = REMOTE_CODE[family]
    (folder / "config.json").write_text(json.dumps(config_json, indent=2))
    for reference in REMOTE_CODE[family].values():
        module = reference.split(".")[0]
        (folder / f"{module}.py").write_text(_tripwire(f"{module}.py"))
    (folder / "generation_config.json").write_text(json.dumps(
        {**GENERATION[family], "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
         "pad_token_id": config.pad_token_id}, indent=2))
    _resave_weights(folder, weight_format, shard_bytes)
    for path in tokenizer_files.iterdir():
        path.replace(folder / path.name)
    shutil.rmtree(package)
    tokenizer_files.rmdir()
    return folder


def _tokenizer_size(family: str, folder: Path) -> int:
    official = FAMILIES[family].official
    if official.tokenizer_class is None:  # GPT-2 files; <|endoftext|> is id 0, as the tiny BTLM's BOS/EOS
        return len(json.loads((folder / "vocab.json").read_text(encoding="utf-8")))
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(folder / official.tokenizer_model_file))
    return processor.get_piece_size() + len(official.tokenizer_added_tokens)


__all__ = ["OFFICIAL_REPOS", "TRIPWIRE_ENV", "WEIGHT_FORMATS", "train_sentencepiece_model", "training_texts",
           "tripwire_fired", "write_official_repo", "write_official_tokenizer"]
