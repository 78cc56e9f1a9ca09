"""CPU decode: hf_smallllm's PyTorch inference path against llama.cpp on the same weights, with the CPU's ISA.

For each family shape (default: the published TinyLlama-1.1B and GEB-1.3B shapes with random weights; `--quick`:
the ~60M `small` presets), one checkpoint is written, exported with `hf-smallllm convert to-gguf` to f32, q8_0,
bf16 and q4_0, and batch-1 greedy decoding is timed in paired rounds (the model suite's method: every round runs
both sides, odd rounds llama.cpp first; the ratio is the median per-round ratio with its distribution-free 95%
interval):

| ours (`load_for_inference` + `greedy_decode`)                         | llama.cpp (llama-cpp-python) |
|-----------------------------------------------------------------------|------------------------------|
| fp32 (q/k/v, gate/up fused; oneDNN-packed if faster)                  | f32                          |
| int8 (`--quantize int8`: fused, torch.ao dynamic / fbgemm)            | q8_0                         |
| bf16 (oneDNN-packed bf16 weights; needs avx512_bf16 or amx_bf16)      | bf16                         |
| int4 (`--quantize int4`: torch's int4 weight-only kernel, int8 head)  | q4_0                         |
| optional (`--variants`): the same through `generate()`, the compiled static-cache step, bitsandbytes NF4 |  |

Ours decodes with `hf_smallllm.inference.lean_decode.greedy_decode` (static cache, no `generate()` bookkeeping),
which is what `hf-smallllm generate` runs for greedy decoding. Both sides decode `--new-tokens` tokens after the
same `--prompt-tokens` prompt; decode tokens/s counts the tokens after the first. Every rate is also given as a
fraction of the bandwidth ceiling of the weights that side reads per token (read bandwidth / bytes).

The report starts with the CPU flags that decide the kernels (AVX2, AVX-512, VNNI, BF16, AMX) and llama.cpp's own
system info; each row names the kernels it ran (ours: the module types of its linear layers; llama.cpp: the ggml
tensor types of its file). A row whose kernels need a flag this CPU lacks says so instead of running.
`--busy` repeats every pair while a fixed background load runs: one process, one thread, copying a 256 MB buffer
(memory streaming) for as long as the busy rows take; its own copy rate and the load average are recorded.
`--profile` splits one decoded token's time (weight products / other operators / Python, from the torch profiler)
for `generate()` on the model without the lean swaps (the path before issue 34) and for the lean loop.
`--btlm-4bit` adds the BTLM-3B q4_0 GGUF's size and the peak RSS of a llama.cpp process generating with it, and the
peak RSS of our int4 path on the same (bf16) checkpoint (the paper's "3 GB at 4-bit"). The machine's load average
is recorded: on a shared machine the absolute numbers move, the paired ratios much less.

    python -m benchmarks.cpu_decode --quick
    python -m benchmarks.cpu_decode --families tinyllama --rounds 6 --busy --profile --btlm-4bit
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def _byte_tokenizer(folder: Path):
    """A byte-level tokenizer (256 byte tokens, one merge, `<|endoftext|>`): the benchmark feeds token ids, but a
    GGUF needs a vocabulary, and this one tokenizes identically in llama.cpp (`gpt2` / `gpt-2`)."""
    from tokenizers import Tokenizer, decoders, models
    from tokenizers import pre_tokenizers as pt
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pt.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(alphabet)}
    vocab["Ġt"] = len(vocab)  # one merge: llama.cpp's byte-level vocabularies need at least one
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "t")]))
    tokenizer.pre_tokenizer = pt.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    fast.save_pretrained(folder)
    return fast


def _checkpoint(family: str, size: str, folder: Path, dtype=torch.float32):
    from hf_smallllm.convert.formats import causal_lm_class
    from hf_smallllm.families import preset_config
    from hf_smallllm.models.attention_smallllm import alibi_slopes

    # the byte tokenizer's <|endoftext|> is id 257: the tiny presets' 256-entry vocabulary gets more rows
    vocab = max(preset_config(family, size).vocab_size, 258)
    config = preset_config(family, size, vocab_size=vocab, bos_token_id=257, eos_token_id=257, pad_token_id=None)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = causal_lm_class(config)(config)
    model = model.to_empty(device="cpu")
    model.tie_weights()  # to_empty gives every module fresh tensors; a tied head must share the embedding again
    with torch.no_grad():  # std 0.02 normals for weights, ones for norm weights, zeros for biases: a quick stand-in
        # for _init_weights, which would first fill every tensor at full size
        for name, parameter in model.named_parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.02)
            else:
                parameter.fill_(1.0 if "norm" in name and name.endswith("weight") else 0.0)
        for name, buffer in model.named_buffers():  # to_empty left them uninitialised too
            if name.endswith("slopes"):  # ALiBi (BTLM, saved with the checkpoint): the standard slopes
                buffer.copy_(alibi_slopes(config.num_attention_heads).view_as(buffer))
    model.to(dtype).save_pretrained(folder)
    _byte_tokenizer(folder)
    del model
    gc.collect()
    return config


class _FirstToken:
    """A generate() streamer that records when the first new token arrives."""

    def __init__(self):
        self.calls, self.first = 0, None

    def put(self, value):
        self.calls += 1
        if self.calls == 2:  # the first call is the prompt
            self.first = time.perf_counter()

    def end(self):
        pass


def _generate_decode(model, prompt: torch.Tensor, new_tokens: int) -> float:
    """Seconds to decode `new_tokens - 1` tokens after the first one, through `generate` (greedy)."""
    streamer = _FirstToken()
    with torch.no_grad():
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, streamer=streamer, pad_token_id=0)
    return time.perf_counter() - streamer.first


def _lean_decode(model, prompt: torch.Tensor, new_tokens: int) -> float:
    """Seconds to decode `new_tokens - 1` tokens after the first one, through the lean greedy loop."""
    from hf_smallllm.inference.lean_decode import greedy_decode

    return greedy_decode(model, prompt, new_tokens).decode_seconds


def _llama_decode(llm, prompt: list[int], new_tokens: int) -> float:
    from hf_smallllm.inference.llama_cpp import llama_cpp_decode

    _, stats = llama_cpp_decode(llm, prompt, new_tokens)
    return stats.decode_seconds


def _ours_bytes_per_token(model) -> int:
    """Weight bytes one decoded token reads: the state dict as stored (oneDNN-packed and fused layers save their
    dense weights, quantized ones their packed bytes), less an untied input embedding (one row is read)."""
    from hf_smallllm.inference.quantization import state_dict_bytes

    embedding = model.get_input_embeddings().weight
    untied = 0 if model.config.tie_word_embeddings else embedding.numel() * embedding.element_size()
    return state_dict_bytes(model) - untied


def _gguf_bytes_per_token(path: Path) -> int:
    from transformers.integrations.gguf.reader import GgufHeader

    infos = {info.name: info.nbytes for info in GgufHeader.from_file(str(path)).tensors}
    total = sum(infos.values())
    return total - infos["token_embd.weight"] if "output.weight" in infos else total


# ours label -> (InferenceOptions fields, decode through generate(), llama.cpp type, CPU flags it needs: any of)
VARIANTS = {
    "fp32": ({}, False, "f32", ()),
    "int8": ({"quantization": "int8"}, False, "q8_0", ()),
    "bf16": ({"dtype": "bfloat16"}, False, "bf16", ("avx512_bf16", "amx_bf16")),
    "int4": ({"dtype": "bfloat16", "quantization": "int4"}, False, "q4_0", ("avx512f", "avx2")),
    "fp32 generate()": ({"lean_decoding": False}, True, "f32", ()),
    "int8 generate()": ({"quantization": "int8", "lean_decoding": False}, True, "q8_0", ()),
    "fp32 compiled": ({"compile": True}, True, "f32", ()),
    "4-bit bnb": ({"quantization": "bnb-4bit"}, True, "q4_0", ()),
}
DEFAULT_VARIANTS = "fp32,int8,bf16,int4"
# llama.cpp's own kernels need these for the same types to run natively (else ggml converts on the fly)
LLAMA_NEEDS = {"bf16": ("avx512_bf16", "amx_bf16")}


def _load_ours(folder: Path, variant: str):
    from hf_smallllm.inference import InferenceOptions, load_for_inference

    model, _ = load_for_inference(folder, InferenceOptions(**VARIANTS[variant][0]))
    return model


def linear_kernels(model) -> str:
    """The kernels of a model's linear layers, named by their module types (counted)."""
    from collections import Counter

    names = {"PackedLinear": "oneDNN packed (mkldnn::_linear_pointwise)", "Linear": "torch F.linear (oneDNN/MKL)",
             "quantized.dynamic.Linear": "fbgemm dynamic int8 (quantized::linear_dynamic)",
             "Int4Linear": "torch int4 weight-only (_weight_int4pack_mm_for_cpu)",
             "Int8WeightOnlyLinear": "torch int8 weight-only (_weight_int8pack_mm)",
             "Linear4bit": "bitsandbytes NF4"}

    def kind(module) -> str:
        cls = type(module)
        return "quantized.dynamic.Linear" if ".quantized.dynamic." in cls.__module__ else cls.__name__

    counts = Counter(kind(m) for m in model.modules() if kind(m) in names)
    dtype = next(model.parameters()).dtype
    return f"{str(dtype).removeprefix('torch.')}: " + ", ".join(f"{n} x {names[k]}" for k, n in counts.most_common())


def gguf_kernels(path: Path) -> str:
    """The ggml types of a GGUF file's 2-D tensors (counted)."""
    from collections import Counter

    from transformers.integrations.gguf.reader import GgufHeader

    names = {0: "F32", 1: "F16", 2: "Q4_0", 8: "Q8_0", 30: "BF16"}  # ggml_type ids
    counts = Counter(names.get(info.ggml_type, f"type {info.ggml_type}")
                     for info in GgufHeader.from_file(str(path)).tensors if len(info.shape) > 1)
    return "ggml " + ", ".join(f"{n} x {k}" for k, n in counts.most_common())


def _missing_flags(needs: tuple, isa: dict) -> str | None:
    if not needs or any(isa.get(flag) for flag in needs):
        return None
    return f"needs {' or '.join(needs)}, which this CPU lacks"


def _pair_rows(family, size, label, ours_label, llama_label, times, steps, ours_bytes, llama_bytes, bandwidth,
               note) -> list:
    from hf_smallllm.bench.suite import Row

    ours_rate = steps / statistics.median(times["ours"])
    metric = f"decode b1{label}: ours {ours_label} vs llama.cpp {llama_label}"
    if "reference" not in times:
        return [Row(family, size, metric, "tok/s", ours_rate, None, note=note)]
    ratios = [r / o for o, r in zip(times["ours"], times["reference"], strict=True)]
    llama_rate = steps / statistics.median(times["reference"])
    # the targets: 0.5 for 4-bit against q4_0 on a quiet machine, 1.0 for every other row (busy included)
    target = 0.5 if ours_label.startswith("int4") and not label else 1.0
    rows = [Row(family, size, metric, "tok/s", ours_rate, llama_rate, f"llama.cpp {llama_label}",
                round_ratios=ratios, note=note, target=target)]
    if not label:  # the bandwidth ceilings, once per pair (quiet rounds)
        rows.append(Row(family, size, f"decode b1, ours {ours_label}: fraction of bandwidth ceiling", "tok/s",
                        ours_rate, bandwidth / ours_bytes, note=f"{ours_bytes / 1e9:.2f} GB per token",
                        is_comparison=False))
        rows.append(Row(family, size, f"decode b1, llama.cpp {llama_label}: fraction of bandwidth ceiling",
                        "tok/s", llama_rate, bandwidth / llama_bytes, note=f"{llama_bytes / 1e9:.2f} GB per token",
                        is_comparison=False))
    return rows


def measure_family(family: str, size: str, args, bandwidth: float, work: Path, isa: dict, extra: dict) -> list:
    from hf_smallllm.bench.suite import Row, paired_rounds
    from hf_smallllm.convert.gguf import package_to_gguf
    from hf_smallllm.inference.llama_cpp import INSTALL_HINT, llama_cpp_available, load_llama_cpp

    folder = work / f"{family}-{size}"
    config = _checkpoint(family, size, folder)
    have_llama = llama_cpp_available() and not args.skip_llama_cpp
    ggufs = {}
    if have_llama:
        for outtype in sorted({VARIANTS[v][2] for v in args.variants}):
            ggufs[outtype] = work / f"{family}-{size}-{outtype}.gguf"
            started = time.perf_counter()
            package_to_gguf(folder, ggufs[outtype], outtype=outtype, verify=False, progress=False)
            print(f"  {family} {size}: {outtype} GGUF {ggufs[outtype].stat().st_size / 2**20:,.0f} MiB in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
    prompt = torch.randint(0, 256, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(0))
    rows, steps = [], args.new_tokens - 1
    for ours_label in args.variants:
        _, through_generate, llama_label, needs = VARIANTS[ours_label]
        metric = f"decode b1: ours {ours_label} vs llama.cpp {llama_label}"
        lacking = _missing_flags(needs, isa)
        if lacking:
            rows.append(Row(family, size, metric, "tok/s", None, None, note=f"not measured: {lacking}"))
            continue
        try:
            model = _load_ours(folder, ours_label)
        except (ImportError, RuntimeError, ValueError) as err:
            rows.append(Row(family, size, metric, "tok/s", None, None,
                            note=f"not measured: {type(err).__name__}: {str(err)[:120]}"))
            continue
        ours_bytes = _ours_bytes_per_token(model)
        decode = _generate_decode if through_generate else _lean_decode
        functions = {"ours": functools.partial(decode, model, prompt, args.new_tokens)}
        kernels = {"ours": linear_kernels(model)}
        llm = None
        if have_llama:
            llm = load_llama_cpp(ggufs[llama_label], n_ctx=args.prompt_tokens + args.new_tokens + 8,
                                 n_threads=args.threads)
            functions["reference"] = functools.partial(_llama_decode, llm, prompt[0].tolist(), args.new_tokens)
            kernels["llama.cpp"] = gguf_kernels(ggufs[llama_label])
            lacking_llama = _missing_flags(LLAMA_NEEDS.get(llama_label, ()), isa)
            if lacking_llama:
                kernels["llama.cpp"] += f" (converted on the fly: {lacking_llama})"
        note = "; ".join(f"{side}: {k}" for side, k in kernels.items())
        if not have_llama:
            note += f"; llama.cpp not installed ({INSTALL_HINT})"
        extra.setdefault("kernels", {})[f"{family} {size} {ours_label}"] = kernels
        if args.profile and not through_generate:
            extra.setdefault("time_split", {})[f"{family} {size} {ours_label}"] = _time_split(model, prompt, args)
        times = paired_rounds(functions, args.rounds, self_timed=True)
        llama_bytes = _gguf_bytes_per_token(ggufs[llama_label]) if llm is not None else None
        rows += _pair_rows(family, size, "", ours_label, llama_label, times, steps, ours_bytes, llama_bytes,
                           bandwidth, note)
        print(f"  {family} {size}: ours {ours_label} {steps / statistics.median(times['ours']):.2f} tok/s"
              + (f", llama.cpp {llama_label} {steps / statistics.median(times['reference']):.2f} tok/s"
                 if llm is not None else ""), flush=True)
        if args.busy:
            with BackgroundLoad() as load:
                busy_times = paired_rounds(functions, args.rounds, self_timed=True)
            extra.setdefault("busy_load", {})[f"{family} {size} {ours_label}"] = load.report
            rows += _pair_rows(family, size, ", busy", ours_label, llama_label, busy_times, steps, ours_bytes,
                               llama_bytes, bandwidth, f"background: {load.describe()}")
            print(f"  {family} {size} busy ({load.describe()}): ours {ours_label} "
                  f"{steps / statistics.median(busy_times['ours']):.2f} tok/s"
                  + (f", llama.cpp {steps / statistics.median(busy_times['reference']):.2f} tok/s"
                     if llm is not None else ""), flush=True)
        if getattr(args, "partial", None):  # a run cut short keeps the pairs it finished
            args.partial.write_text(json.dumps({"rows": [r.to_dict() for r in rows], **extra}, default=str))
        model = llm = functions = None  # free this pair before loading the next
        gc.collect()
    return rows, config


def _time_split(model, prompt: torch.Tensor, args) -> dict:
    """Per-token split (products / other operators / Python) for generate() on the model without the lean swaps
    (the path before issue 34) and for the lean loop; the fastest of `args.profile` profiled runs of each."""
    from hf_smallllm.bench.decode_profile import profile_decode_split
    from hf_smallllm.inference.lean_decode import greedy_decode, prepare_lean_decoding, undo_lean_decoding

    n = args.new_tokens
    short = prompt[:, :4]  # a short prompt: prefill is a small share of the profiled call

    def through_generate() -> int:
        with torch.no_grad():
            model.generate(short, attention_mask=torch.ones_like(short), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=0)
        return n

    undo_lean_decoding(model)
    through_generate()
    before = min((profile_decode_split(through_generate) for _ in range(args.profile)), key=lambda s: s.total_ms)
    prepare_lean_decoding(model)
    greedy_decode(model, short, n)
    after = min((profile_decode_split(lambda: greedy_decode(model, short, n).tokens.numel())
                 for _ in range(args.profile)), key=lambda s: s.total_ms)
    print(f"    before (generate): {before.describe()}\n    after (lean):      {after.describe()}", flush=True)
    return {"generate": before.to_dict(), "lean": after.to_dict()}


# One process, one thread, copying a 256 MB buffer into another (reads and writes stream through memory), for as
# long as it lives; it prints how many bytes per second it moved when it is stopped.
_LOAD_CHILD = """
import signal, time
import numpy as np
src, dst = np.ones(32 * 2**20), np.empty(32 * 2**20)
moved, start, stop = 0, time.perf_counter(), []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
while not stop:
    np.copyto(dst, src)
    moved += 2 * src.nbytes
print(moved / (time.perf_counter() - start), flush=True)
"""


class BackgroundLoad:
    """A fixed, bounded background load for the block: `_LOAD_CHILD`, pinned to CPU 0 where the OS allows."""

    def __enter__(self):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.process = subprocess.Popen([sys.executable, "-c", _LOAD_CHILD], stdout=subprocess.PIPE, text=True,
                                        env=env)
        try:
            os.sched_setaffinity(self.process.pid, {0})
        except (AttributeError, OSError):
            pass
        time.sleep(0.5)
        self.load_start = os.getloadavg()
        return self

    def __exit__(self, *exc):
        self.load_end = os.getloadavg()
        self.process.terminate()
        out, _ = self.process.communicate(timeout=30)
        try:
            rate = float(out.split()[-1])
        except (ValueError, IndexError):
            rate = float("nan")
        self.report = {"kind": "1 process, 1 thread, 256 MB numpy copy loop, pinned to CPU 0",
                       "copy_GBps": round(rate / 1e9, 2), "load_average_start": self.load_start,
                       "load_average_end": self.load_end}
        return False

    def describe(self) -> str:
        return (f"1-thread 256 MB copy loop on CPU 0 at {self.report['copy_GBps']} GB/s, load average "
                f"{self.load_start[0]:.1f} -> {self.load_end[0]:.1f}")


# The peak is VmHWM, the high-water mark of this process's own memory map. ru_maxrss is not: Linux carries it
# across fork and exec, so a child of a process that had just built a 3B checkpoint reported that process's 11 GB.
_RSS_CHILD = """
import sys
from hf_smallllm.inference.llama_cpp import llama_cpp_decode, load_llama_cpp
llm = load_llama_cpp(sys.argv[1], n_ctx=512)
tokens, stats = llama_cpp_decode(llm, list(range(3, 67)), 32)
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(stats.decode_tokens_per_second, int(status["VmHWM"].split()[0]) * 1024)
"""


def _peak_rss_child(code: str, *args: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent.parent),
                                                                    os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True,
                          env=env).stdout.split()


# Our int4 path on the same checkpoint. `streamed` is what `load_for_inference` does: read, fuse and quantize one
# block at a time (inference/streaming_load.py); `whole` is the reference path it replaced, the bf16 model loaded whole
# and then quantized. The peak while generating is taken after resetting the high-water mark (Linux: writing 5 to
# /proc/self/clear_refs).
_RSS_CHILD_INT4 = """
import sys, time, torch
from hf_smallllm.inference import InferenceOptions, load_for_inference, streaming_load
from hf_smallllm.inference.lean_decode import greedy_decode
if sys.argv[2] == "whole":
    streaming_load.load_int4_streaming = lambda *args, **kwargs: None
def status():
    return {k: int(v.split()[0]) * 1024 for k, v in (l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
            if k in ("VmHWM", "VmRSS")}
started = time.perf_counter()
model, _ = load_for_inference(sys.argv[1], InferenceOptions(dtype="bfloat16", quantization="int4",
                                                            pack_linears=False))
seconds = time.perf_counter() - started
loaded = status()
try:
    open("/proc/self/clear_refs", "w").write("5")
    reset = True
except OSError:
    reset = False
result = greedy_decode(model, torch.arange(3, 67).view(1, -1), 32)
after = status()
print(result.decode_tokens_per_second, loaded["VmHWM"], loaded["VmRSS"], after["VmHWM"] if reset else -1, seconds)
"""


def btlm_4bit(work: Path, args) -> dict:
    """Size of the BTLM-3B q4_0 GGUF and the peak RSS of a llama.cpp process generating 32 tokens with it; the same
    for our int4 path on the bf16 checkpoint (peak of the whole process, and peak while generating)."""
    from hf_smallllm.convert.gguf import package_to_gguf
    from hf_smallllm.inference.llama_cpp import llama_cpp_available

    folder = work / "btlm-published"
    started = time.perf_counter()
    _checkpoint("btlm", "published", folder, dtype=torch.bfloat16)
    path = work / "btlm-3b-q4_0.gguf"
    package_to_gguf(folder, path, outtype="q4_0", verify=False, progress=False)
    result = {"gguf_bytes": path.stat().st_size, "seconds_to_build": round(time.perf_counter() - started)}
    if llama_cpp_available() and not args.skip_llama_cpp:
        out = _peak_rss_child(_RSS_CHILD, str(path))
        result.update(decode_tokens_per_second=float(out[0]), peak_rss_bytes=int(out[1]))
    for key, mode in (("ours_int4_whole_load", "whole"), ("ours_int4", "streamed")):
        out = _peak_rss_child(_RSS_CHILD_INT4, str(folder), mode)
        result[key] = {"decode_tokens_per_second": float(out[0]), "peak_rss_bytes_with_loading": int(out[1]),
                       "rss_bytes_after_loading": int(out[2]), "peak_rss_bytes_while_generating": int(out[3]),
                       "load_seconds": float(out[4])}
    return result


def _isa_line(isa: dict, llama_info: str | None) -> str:
    present = [flag for flag, has in isa.items() if has]
    absent = [flag for flag, has in isa.items() if not has]
    line = f"CPU flags: {' '.join(present) or 'none of the listed'}; lacks: {' '.join(absent) or 'none'}"
    return line + (f"\nllama.cpp system info: {llama_info}" if llama_info else "")


def _split_table(splits: dict) -> str:
    lines = ["", "Per-token time split (torch profiler; fastest of the profiled runs; ms per token):", "",
             "| model | path | total | weight products | other operators | Python | operators per token |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for key, paths in splits.items():
        for path, split in paths.items():
            label = "generate(), no lean swaps (before)" if path == "generate" else "lean greedy_decode (after)"
            lines.append(f"| {key} | {label} | {split['total_ms']} | {split['products_ms']} | "
                         f"{split['other_ops_ms']} | {split['python_ms']} | {split['operators_per_token']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="tinyllama,geb")
    parser.add_argument("--size", default=None, help="preset (default: published; small with --quick)")
    parser.add_argument("--quick", action="store_true", help="small (~60M) shapes, 4 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="paired rounds per row (default 8; 4 with --quick)")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=65)
    parser.add_argument("--threads", type=int, default=None, help="torch and llama.cpp threads (default: torch's)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help=f"comma-separated ours variants, of: {', '.join(VARIANTS)} (default {DEFAULT_VARIANTS})")
    parser.add_argument("--skip-llama-cpp", action="store_true", help="only our rows (as if llama.cpp were absent)")
    parser.add_argument("--busy", action="store_true", help="also every pair under a fixed background load")
    parser.add_argument("--profile", type=int, default=0, metavar="RUNS",
                        help="per-token time split before/after (fastest of RUNS profiled runs; 0 = off)")
    parser.add_argument("--btlm-4bit", action="store_true", help="also BTLM-3B 4-bit size and peak RSS, both sides")
    parser.add_argument("--output-dir", default=str(RESULTS))
    parser.add_argument("--name", default=None, help="results file name (default: cpu-decode[-quick])")
    parser.add_argument("--work-dir", default=None, help="where checkpoints and GGUFs go (default: a temp dir)")
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    size = args.size or ("small" if args.quick else "published")
    args.rounds = args.rounds or (4 if args.quick else 8)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()

    import hf_smallllm  # noqa: F401
    from hf_smallllm.bench.measure import cpu_isa_flags, machine_description, read_bandwidths
    from hf_smallllm.bench.suite import format_markdown
    from hf_smallllm.inference.llama_cpp import llama_cpp_available, llama_cpp_version

    machine = machine_description()
    machine["load_average_start"] = os.getloadavg()
    machine["llama_cpp_python"] = llama_cpp_version()
    isa = cpu_isa_flags()
    machine["isa"] = isa
    machine["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    if llama_cpp_available():
        import llama_cpp

        machine["llama_cpp_system_info"] = llama_cpp.llama_print_system_info().decode().strip()
    kernels = read_bandwidths()
    bandwidth = max(kernels.values())
    machine["read_bandwidth_GBps"] = round(bandwidth / 1e9, 2)
    machine["read_bandwidth_by_kernel_GBps"] = {k: round(v / 1e9, 2) for k, v in kernels.items()}
    isa_line = _isa_line(isa, machine.get("llama_cpp_system_info"))
    print(f"{machine['cpu']}, {args.threads} threads, read bandwidth {bandwidth / 1e9:.1f} GB/s, load average "
          f"{machine['load_average_start']}, llama-cpp-python {machine['llama_cpp_python']}, torch CPU capability "
          f"{machine['torch_cpu_capability']}\n{isa_line}", flush=True)
    rows, extra = [], {}
    name = args.name or ("cpu-decode-quick" if args.quick else "cpu-decode" if args.families.strip()
                         else "cpu-decode-btlm-4bit")
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    args.partial = output / f".{name}.partial.json"
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        for family in [f.strip() for f in args.families.split(",") if f.strip()]:
            family_rows, _ = measure_family(family, size, args, bandwidth, Path(work), isa, extra)
            rows += family_rows
        if args.btlm_4bit:
            try:
                extra["btlm_3b_q4_0"] = btlm_4bit(Path(work), args)
            except Exception as err:  # keep the rows measured so far
                extra["btlm_3b_q4_0"] = {"error": f"{type(err).__name__}: {err}"[:300]}
            print(f"  BTLM-3B 4-bit: {extra['btlm_3b_q4_0']}", flush=True)
    machine["load_average_end"] = os.getloadavg()
    machine["max_rss_bytes_benchmark"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    markdown = f"{isa_line}\ntorch CPU capability: {machine['torch_cpu_capability']}\n\n"
    markdown += format_markdown(rows, machine, args.rounds)
    markdown += (f"\nLoad average (1/5/15 min) at start {machine['load_average_start']}, at end "
                 f"{machine['load_average_end']}; llama-cpp-python {machine['llama_cpp_python']}; prompt "
                 f"{args.prompt_tokens} tokens, {args.new_tokens} new tokens; decode tokens/s excludes the first.\n")
    if extra.get("time_split"):
        markdown += _split_table(extra["time_split"])
    if "btlm_3b_q4_0" in extra:
        b = extra["btlm_3b_q4_0"]
        if "error" in b:
            markdown += f"\nBTLM-3B 4-bit: not measured ({b['error']})\n"
        else:
            markdown += (f"\nBTLM-3B q4_0 GGUF: {b['gguf_bytes'] / 1e9:.2f} GB"
                         + (f"; llama.cpp peak RSS while generating {b['peak_rss_bytes'] / 1e9:.2f} GB, "
                            f"{b['decode_tokens_per_second']:.1f} tok/s" if "peak_rss_bytes" in b else "") + "\n")
            for key, label in (("ours_int4_whole_load", "loaded whole in bf16, then quantized (before)"),
                               ("ours_int4", "streamed: read and quantized block by block")):
                o = b[key]
                markdown += (f"BTLM-3B ours int4 (bf16 checkpoint, `--quantize int4`, {label}): peak RSS while "
                             f"generating {o['peak_rss_bytes_while_generating'] / 1e9:.2f} GB (after loading: "
                             f"{o['rss_bytes_after_loading'] / 1e9:.2f} GB resident; the whole process including "
                             f"loading peaked at {o['peak_rss_bytes_with_loading'] / 1e9:.2f} GB; loading took "
                             f"{o['load_seconds']:.0f} s), {o['decode_tokens_per_second']:.1f} tok/s\n")
    for suffix, text in (("md", markdown), ("json", json.dumps({"machine": machine, "rows": [r.to_dict() for r in rows],
                                                               **extra}, indent=2, default=str))):
        target = output / f"{name}.{suffix}"
        staging = target.with_name(f".{target.name}.tmp")
        staging.write_text(text, encoding="utf-8")
        os.replace(staging, target)
    args.partial.unlink(missing_ok=True)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
