"""llama.cpp through llama-cpp-python, on GGUF files written by `hf-smallllm convert to-gguf`: logits, greedy
decoding and tokenization for the parity tests, the CPU decode benchmark and `hf-smallllm generate --backend
llama.cpp`.

llama-cpp-python is optional (it compiles llama.cpp from source when installed; see docs/performance.md for the
lean build options). `llama_cpp_available()` says whether it can be imported; everything else raises ImportError
with the install command when it cannot.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch

INSTALL_HINT = ('pip install llama-cpp-python (lean build: CMAKE_ARGS="-DLLAMA_BUILD_TOOLS=OFF '
                '-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF '
                '-DLLAMA_BUILD_COMMON=OFF -DLLAMA_CURL=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2)')


def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def llama_cpp_version() -> str | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    return getattr(llama_cpp, "__version__", "unknown")


# ggml type ids of the KV cache element types llama.cpp accepts here
_KV_CACHE_TYPES = {"f32": 0, "f16": 1}


def load_llama_cpp(path: str | os.PathLike, *, n_ctx: int = 512, n_threads: int | None = None,
                   logits_all: bool = False, n_batch: int = 512, seed: int = 0, kv_cache_type: str = "f16",
                   vocab_only: bool = False):
    """A `llama_cpp.Llama` on the GGUF file `path` (CPU, quiet). `logits_all` keeps the logits of every position;
    `vocab_only` loads only the tokenizer (no weights).

    `kv_cache_type`: llama.cpp keeps keys and values in f16 by default, which alone moves TinyLlama-1.1B's logits by
    4e-3 against an fp32 forward; "f32" compares an f32 GGUF with fp32 PyTorch like for like (1.3e-5)."""
    try:
        from llama_cpp import Llama
    except ImportError as err:
        raise ImportError(f"llama.cpp is not installed: {INSTALL_HINT}") from err
    if kv_cache_type not in _KV_CACHE_TYPES:
        raise ValueError(f"kv_cache_type={kv_cache_type!r}; choose one of {', '.join(_KV_CACHE_TYPES)}")
    threads = n_threads or torch.get_num_threads()
    kv = _KV_CACHE_TYPES[kv_cache_type]
    return Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                 logits_all=logits_all, n_batch=n_batch, n_gpu_layers=0, seed=seed, type_k=kv, type_v=kv,
                 vocab_only=vocab_only, verbose=False)


def llama_cpp_logits(llm, ids: list[int] | torch.Tensor) -> torch.Tensor:
    """float32 logits [tokens, vocab] of one sequence (the model must be loaded with `logits_all=True`)."""
    ids = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
    llm.reset()
    llm.eval(ids)
    return torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32))


def llama_cpp_greedy(llm, ids: list[int], max_new_tokens: int) -> list[int]:
    """Greedy continuation of `ids` by llama.cpp: argmax of the last logits, one token at a time."""
    llm.reset()
    llm.eval([int(i) for i in ids])
    out = []
    for _ in range(max_new_tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        llm.eval([token])
    return out


@dataclass
class LlamaCppDecode:
    """Timing of one greedy generation by llama.cpp."""

    prompt_tokens: int
    new_tokens: int
    prefill_seconds: float
    decode_seconds: float

    @property
    def decode_tokens_per_second(self) -> float:
        return (self.new_tokens - 1) / self.decode_seconds if self.new_tokens > 1 and self.decode_seconds > 0 else 0.0


def llama_cpp_decode(llm, ids: list[int], max_new_tokens: int) -> tuple[list[int], LlamaCppDecode]:
    """Greedy generation through llama.cpp's own sampler loop (`Llama.generate`, temperature 0), timed like
    `stream_generate`: prefill ends when the first new token is out; decode covers the remaining tokens."""
    llm.reset()
    start = time.perf_counter()
    first = None
    out: list[int] = []
    for token in llm.generate([int(i) for i in ids], top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
        if first is None:
            first = time.perf_counter()
        out.append(int(token))
        if len(out) >= max_new_tokens:
            break
    end = time.perf_counter()
    first = first or end
    return out, LlamaCppDecode(len(ids), len(out), first - start, end - first)


# what `hf-smallllm generate --backend llama.cpp` exports a checkpoint to, by --quantize (then by --dtype)
GGUF_OUTTYPE_BY_QUANTIZATION = {"int8": "q8_0", "int4": "q4_0", "bnb-8bit": "q8_0", "bnb-4bit": "q4_0"}
GGUF_OUTTYPE_BY_DTYPE = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
# general.file_type (llama.cpp's LlamaFileType) of the types above, to name the type of a GGUF file given as it is
_GGUF_FILE_TYPE_NAMES = {0: "f32", 1: "f16", 2: "q4_0", 7: "q8_0", 32: "bf16"}


def _load_given_gguf(path, info, **kwargs):
    """`load_llama_cpp` on a GGUF file the user gave, already checked by `check_gguf_file_complete` (`info`): a file
    llama.cpp still refuses (an architecture it does not know, a vocabulary-only file, tensors that do not fit the
    metadata) is the file's fault, said in one line. llama.cpp's own reason is in its log, hidden (verbose=False)."""
    from ..errors import UsageValueError

    try:
        return load_llama_cpp(path, **kwargs)
    except ValueError as err:  # llama-cpp-python: "Failed to load model from file: ..."
        raise UsageValueError(f"{path}: llama.cpp cannot load this GGUF file (architecture {info.architecture!r}, "
                              f"{len(info.tensors):,} tensor{'s' if len(info.tensors) != 1 else ''}; "
                              f"{str(err).split(':')[0].lower()})") from None


def llama_cpp_stream_generate(model_path, prompt: str, *, tokenizer_path=None, quantization: str = "none",
                              dtype: str = "float32", max_new_tokens: int = 64, temperature: float = 0.0,
                              top_p: float = 1.0, top_k: int = 0, repetition_penalty: float = 1.0,
                              chat: bool = False, seed: int = 0, n_threads: int | None = None,
                              on_text=lambda s: print(s, end="", flush=True), on_ready=None):
    """`stream_generate` through llama.cpp: `model_path` is a GGUF file, or a package checkpoint folder that is
    exported first (`convert to-gguf`, into a temporary folder removed afterwards) as the type the options name
    (GGUF_OUTTYPE_BY_QUANTIZATION, else GGUF_OUTTYPE_BY_DTYPE). The prompt is tokenized by the checkpoint's own
    tokenizer (its chat template with `chat`) when there is one, else by llama.cpp's. `on_ready()`, when given, is
    called once the model is loaded, before the first token. Returns GenerationStats.

    A GGUF file is checked (`check_gguf_file_complete`) before llama.cpp opens it: llama.cpp trusts the file, and a
    truncated or corrupt one is a one-line `InvalidGGUFError` here instead of a failed load or an aborted process."""
    import codecs
    import tempfile
    from pathlib import Path

    from ..convert.gguf_file import check_gguf_file_complete
    from ..errors import UsageFileNotFoundError, UsageValueError
    from .generation import GenerationStats

    if not llama_cpp_available():
        raise UsageValueError(f"--backend llama.cpp needs llama-cpp-python: {INSTALL_HINT}")
    if max_new_tokens < 1:
        raise UsageValueError(f"max_new_tokens={max_new_tokens} must be at least 1")
    path = Path(model_path)
    if not path.exists():
        raise UsageFileNotFoundError(f"--backend llama.cpp reads a local GGUF file or checkpoint folder; no {path}")
    outtype = GGUF_OUTTYPE_BY_QUANTIZATION.get(quantization) or GGUF_OUTTYPE_BY_DTYPE[dtype]
    given = None  # what the check read from a GGUF file given as it is
    if not path.is_dir():
        if path.suffix != ".gguf":
            raise UsageValueError(f"{path} is neither a checkpoint folder nor a .gguf file")
        given = check_gguf_file_complete(path)
        if not given.tensors:
            raise UsageValueError(f"{path} holds no tensors (a vocabulary-only GGUF?); generating needs a model")
        file_type = given.metadata.get("general.file_type")
        outtype = _GGUF_FILE_TYPE_NAMES.get(file_type, f"file type {file_type}" if file_type is not None else "?")
    tokenizer = None
    if tokenizer_path or path.is_dir():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or path)
    if chat and (tokenizer is None or not getattr(tokenizer, "chat_template", None)):
        raise UsageValueError("--chat needs a tokenizer with a chat template (pass --tokenizer FOLDER with a GGUF)")
    with tempfile.TemporaryDirectory(prefix="hf-smallllm-gguf-") as work:
        if given is None:
            from ..convert.gguf import package_to_gguf

            gguf = Path(work) / f"model-{outtype}.gguf"
            package_to_gguf(path, gguf, outtype=outtype, tokenizer=tokenizer_path, verify=False, progress=False)
            load = load_llama_cpp
        else:
            gguf = path

            def load(file, **kwargs):
                return _load_given_gguf(file, given, **kwargs)
        if tokenizer is None:
            ids = load(gguf, vocab_only=True).tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        elif chat:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                return_dict=True)["input_ids"]
        else:
            ids = tokenizer(prompt)["input_ids"]
        if not ids:
            raise UsageValueError("the prompt encodes to no tokens")
        ids = [int(i) for i in ids]
        llm = load(gguf, n_ctx=len(ids) + max_new_tokens + 1, n_threads=n_threads, seed=seed)
        if on_ready is not None:
            on_ready()
        # transformers' defaults: no min-p cut; temperature 0 is greedy
        sampling = dict(temp=temperature, top_p=top_p, top_k=top_k if temperature > 0 else 1, min_p=0.0,
                        repeat_penalty=repetition_penalty)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span tokens
        eos, pieces, out = llm.token_eos(), [], []
        history = list(ids)  # what a token's text depends on (SentencePiece drops a leading space at the start)

        def emit(text: str) -> None:
            if text:
                pieces.append(text)
                on_text(text)

        start = time.perf_counter()
        first = None
        for token in llm.generate(ids, reset=True, **sampling):
            first = first or time.perf_counter()
            out.append(int(token))
            if token == eos:
                break
            emit(decoder.decode(llm.detokenize([token], prev_tokens=history)))
            history.append(int(token))
            if len(out) >= max_new_tokens:
                break
        end = time.perf_counter()
        emit(decoder.decode(b"", final=True))
    first = first or end
    return GenerationStats(text="".join(pieces), prompt_tokens=len(ids), new_tokens=len(out),
                           prefill_seconds=first - start, decode_seconds=end - first,
                           extra={"backend": "llama.cpp", "gguf_type": outtype, "token_ids": out})


def llama_cpp_tokenize(llm, text: str, add_special: bool = False) -> list[int]:
    """llama.cpp's tokenization of `text` (with BOS/EOS as the GGUF's add_bos/add_eos say when `add_special`)."""
    return llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=False)


__all__ = ["GGUF_OUTTYPE_BY_DTYPE", "GGUF_OUTTYPE_BY_QUANTIZATION", "INSTALL_HINT", "LlamaCppDecode",
           "llama_cpp_available", "llama_cpp_decode", "llama_cpp_greedy", "llama_cpp_logits",
           "llama_cpp_stream_generate", "llama_cpp_tokenize", "llama_cpp_version", "load_llama_cpp"]
