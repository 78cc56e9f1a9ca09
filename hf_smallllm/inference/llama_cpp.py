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


def load_llama_cpp(path: str | os.PathLike, *, n_ctx: int = 512, n_threads: int | None = None,
                   logits_all: bool = False, n_batch: int = 512):
    """A `llama_cpp.Llama` on the GGUF file `path` (CPU, quiet). `logits_all` keeps the logits of every position."""
    try:
        from llama_cpp import Llama
    except ImportError as err:
        raise ImportError(f"llama.cpp is not installed: {INSTALL_HINT}") from err
    threads = n_threads or torch.get_num_threads()
    return Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                 logits_all=logits_all, n_batch=n_batch, n_gpu_layers=0, verbose=False)


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


def llama_cpp_tokenize(llm, text: str, add_special: bool = False) -> list[int]:
    """llama.cpp's tokenization of `text` (with BOS/EOS as the GGUF's add_bos/add_eos say when `add_special`)."""
    return llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=False)


__all__ = ["INSTALL_HINT", "LlamaCppDecode", "llama_cpp_available", "llama_cpp_decode", "llama_cpp_greedy",
           "llama_cpp_logits", "llama_cpp_tokenize", "llama_cpp_version", "load_llama_cpp"]
