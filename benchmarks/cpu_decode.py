"""CPU decode: hf_smallllm's PyTorch inference path against llama.cpp on the same weights.

For each family shape (default: the published TinyLlama-1.1B and GEB-1.3B shapes with random weights; `--quick`:
the ~60M `small` presets), one checkpoint is written, exported with `hf-smallllm convert to-gguf` to f32, q8_0 and
q4_0, and batch-1 greedy decoding is timed in paired rounds (the model suite's method: every round runs both sides,
odd rounds llama.cpp first; the ratio is the median per-round ratio with its distribution-free 95% interval):

| ours (`load_for_inference`)                          | llama.cpp (llama-cpp-python) |
|------------------------------------------------------|------------------------------|
| fp32 (q/k/v, gate/up fused; oneDNN-packed if faster) | f32                          |
| fp32, compiled decode step on a static cache         | f32                          |
| int8 (`--quantize int8`: fused, torch.ao dynamic)    | q8_0                         |
| 4-bit (`--quantize bnb-4bit`, NF4)                    | q4_0                         |

Both sides decode `--new-tokens` tokens after the same `--prompt-tokens` prompt; decode tokens/s counts the tokens
after the first (the first one ends prefill). Every rate is also given as a fraction of the bandwidth ceiling of
the weights that side reads per token (read bandwidth / bytes). llama.cpp rows say "not installed" without
llama-cpp-python. `--btlm-4bit` adds the BTLM-3B q4_0 GGUF's size and the peak RSS of a llama.cpp process
generating with it (the paper's "3 GB at 4-bit"). The machine's load average is recorded: on a shared machine the
absolute numbers move, the paired ratios much less.

    python -m benchmarks.cpu_decode --quick
    python -m benchmarks.cpu_decode --families tinyllama,geb --rounds 8 --btlm-4bit
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


def _ours_decode(model, prompt: torch.Tensor, new_tokens: int) -> float:
    """Seconds to decode `new_tokens - 1` tokens after the first one, through `generate` (greedy)."""
    streamer = _FirstToken()
    with torch.no_grad():
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, streamer=streamer, pad_token_id=0)
    return time.perf_counter() - streamer.first


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


def _load_ours(folder: Path, variant: str):
    from hf_smallllm.inference import InferenceOptions, load_for_inference

    options = {"fp32": InferenceOptions(), "fp32 compiled": InferenceOptions(compile=True),
               "int8": InferenceOptions(quantization="int8"), "4-bit": InferenceOptions(quantization="bnb-4bit")}
    model, _ = load_for_inference(folder, options[variant])
    return model


PAIRS = (("fp32", "f32"), ("fp32 compiled", "f32"), ("int8", "q8_0"), ("4-bit", "q4_0"))


def measure_family(family: str, size: str, args, bandwidth: float, work: Path) -> list:
    from hf_smallllm.bench.suite import Row
    from hf_smallllm.convert.gguf import package_to_gguf
    from hf_smallllm.inference.llama_cpp import INSTALL_HINT, llama_cpp_available, load_llama_cpp

    folder = work / f"{family}-{size}"
    config = _checkpoint(family, size, folder)
    have_llama = llama_cpp_available() and not args.skip_llama_cpp
    ggufs = {}
    if have_llama:
        for outtype in sorted({lc for _, lc in PAIRS}):
            ggufs[outtype] = work / f"{family}-{size}-{outtype}.gguf"
            started = time.perf_counter()
            package_to_gguf(folder, ggufs[outtype], outtype=outtype, verify=False, progress=False)
            print(f"  {family} {size}: {outtype} GGUF {ggufs[outtype].stat().st_size / 2**20:,.0f} MiB in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
    prompt = torch.randint(0, 256, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(0))
    rows = []
    for ours_label, llama_label in PAIRS:
        if ours_label in args.skip:
            continue
        try:
            model = _load_ours(folder, ours_label)
        except (ImportError, RuntimeError, ValueError) as err:
            rows.append(Row(family, size, f"decode b1: ours {ours_label}", "tok/s", None, None,
                            note=f"not measured: {type(err).__name__}: {str(err)[:120]}"))
            continue
        ours_bytes = _ours_bytes_per_token(model)
        functions = {"ours": functools.partial(_ours_decode, model, prompt, args.new_tokens)}
        llm = None
        if have_llama:
            llm = load_llama_cpp(ggufs[llama_label], n_ctx=args.prompt_tokens + args.new_tokens + 8,
                                 n_threads=args.threads)
            functions["reference"] = functools.partial(_llama_decode, llm, prompt[0].tolist(), args.new_tokens)
        from hf_smallllm.bench.suite import paired_rounds

        times = paired_rounds(functions, args.rounds, self_timed=True)
        steps = args.new_tokens - 1
        ours_rate = steps / statistics.median(times["ours"])
        if llm is not None:
            ratios = [r / o for o, r in zip(times["ours"], times["reference"], strict=True)]
            llama_rate = steps / statistics.median(times["reference"])
            rows.append(Row(family, size, f"decode b1: ours {ours_label} vs llama.cpp {llama_label}", "tok/s",
                            ours_rate, llama_rate, f"llama.cpp {llama_label}", round_ratios=ratios))
        else:
            rows.append(Row(family, size, f"decode b1: ours {ours_label} vs llama.cpp {llama_label}", "tok/s",
                            ours_rate, None, note=f"llama.cpp not installed ({INSTALL_HINT})"))
        rows.append(Row(family, size, f"decode b1, ours {ours_label}: fraction of bandwidth ceiling", "tok/s",
                        ours_rate, bandwidth / ours_bytes,
                        note=f"{ours_bytes / 1e9:.2f} GB per token", is_comparison=False))
        if llm is not None:
            lc_bytes = _gguf_bytes_per_token(ggufs[llama_label])
            rows.append(Row(family, size, f"decode b1, llama.cpp {llama_label}: fraction of bandwidth ceiling",
                            "tok/s", llama_rate, bandwidth / lc_bytes, note=f"{lc_bytes / 1e9:.2f} GB per token",
                            is_comparison=False))
        print(f"  {family} {size}: ours {ours_label} {ours_rate:.2f} tok/s"
              + (f", llama.cpp {llama_label} {llama_rate:.2f} tok/s" if llm is not None else ""), flush=True)
        model = llm = functions = None  # free this pair before loading the next
        gc.collect()
    return rows, config


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


def btlm_4bit(work: Path, args) -> dict:
    """Size of the BTLM-3B q4_0 GGUF and the peak RSS of a llama.cpp process generating 32 tokens with it."""
    from hf_smallllm.convert.gguf import package_to_gguf
    from hf_smallllm.inference.llama_cpp import llama_cpp_available

    folder = work / "btlm-published"
    started = time.perf_counter()
    _checkpoint("btlm", "published", folder, dtype=torch.bfloat16)
    path = work / "btlm-3b-q4_0.gguf"
    package_to_gguf(folder, path, outtype="q4_0", verify=False, progress=False)
    result = {"gguf_bytes": path.stat().st_size, "seconds_to_build": round(time.perf_counter() - started)}
    if llama_cpp_available() and not args.skip_llama_cpp:
        out = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(path)], capture_output=True, text=True,
                             check=True).stdout.split()
        result.update(decode_tokens_per_second=float(out[0]), peak_rss_bytes=int(out[1]))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="tinyllama,geb")
    parser.add_argument("--size", default=None, help="preset (default: published; small with --quick)")
    parser.add_argument("--quick", action="store_true", help="small (~60M) shapes, 4 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="paired rounds per row (default 8; 4 with --quick)")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=65)
    parser.add_argument("--threads", type=int, default=None, help="torch and llama.cpp threads (default: torch's)")
    parser.add_argument("--skip", default="", help="comma-separated ours variants to leave out (e.g. '4-bit')")
    parser.add_argument("--skip-llama-cpp", action="store_true", help="only our rows (as if llama.cpp were absent)")
    parser.add_argument("--btlm-4bit", action="store_true", help="also BTLM-3B q4_0 GGUF size and peak RSS")
    parser.add_argument("--output-dir", default=str(RESULTS))
    parser.add_argument("--work-dir", default=None, help="where checkpoints and GGUFs go (default: a temp dir)")
    args = parser.parse_args(argv)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    size = args.size or ("small" if args.quick else "published")
    args.rounds = args.rounds or (4 if args.quick else 8)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()

    import hf_smallllm  # noqa: F401
    from hf_smallllm.bench.measure import machine_description, read_bandwidths
    from hf_smallllm.bench.suite import format_markdown
    from hf_smallllm.inference.llama_cpp import llama_cpp_version

    machine = machine_description()
    machine["load_average_start"] = os.getloadavg()
    machine["llama_cpp_python"] = llama_cpp_version()
    kernels = read_bandwidths()
    bandwidth = max(kernels.values())
    machine["read_bandwidth_GBps"] = round(bandwidth / 1e9, 2)
    machine["read_bandwidth_by_kernel_GBps"] = {k: round(v / 1e9, 2) for k, v in kernels.items()}
    print(f"{machine['cpu']}, {args.threads} threads, read bandwidth {bandwidth / 1e9:.1f} GB/s, load average "
          f"{machine['load_average_start']}, llama-cpp-python {machine['llama_cpp_python']}", flush=True)
    rows, extra = [], {}
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        for family in [f.strip() for f in args.families.split(",") if f.strip()]:
            family_rows, _ = measure_family(family, size, args, bandwidth, Path(work))
            rows += family_rows
        if args.btlm_4bit:
            try:
                extra["btlm_3b_q4_0"] = btlm_4bit(Path(work), args)
            except Exception as err:  # keep the rows measured so far
                extra["btlm_3b_q4_0"] = {"error": f"{type(err).__name__}: {err}"[:300]}
            print(f"  BTLM-3B q4_0: {extra['btlm_3b_q4_0']}", flush=True)
    machine["load_average_end"] = os.getloadavg()
    machine["max_rss_bytes_benchmark"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # --families "" --btlm-4bit measures only the BTLM file, into a file of its own
    name = "cpu-decode-quick" if args.quick else "cpu-decode" if rows else "cpu-decode-btlm-4bit"
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    markdown = format_markdown(rows, machine, args.rounds)
    markdown += (f"\nLoad average (1/5/15 min) at start {machine['load_average_start']}, at end "
                 f"{machine['load_average_end']}; llama-cpp-python {machine['llama_cpp_python']}; prompt "
                 f"{args.prompt_tokens} tokens, {args.new_tokens} new tokens; decode tokens/s excludes the first.\n")
    if "btlm_3b_q4_0" in extra:
        b = extra["btlm_3b_q4_0"]
        markdown += f"\nBTLM-3B q4_0 GGUF: not measured ({b['error']})\n" if "error" in b else (
                    f"\nBTLM-3B q4_0 GGUF: {b['gguf_bytes'] / 1e9:.2f} GB"
                     + (f"; llama.cpp peak RSS while generating {b['peak_rss_bytes'] / 1e9:.2f} GB, "
                        f"{b['decode_tokens_per_second']:.1f} tok/s" if "peak_rss_bytes" in b else "") + "\n")
    for suffix, text in (("md", markdown), ("json", json.dumps({"machine": machine, "rows": [r.to_dict() for r in rows],
                                                               **extra}, indent=2, default=str))):
        target = output / f"{name}.{suffix}"
        staging = target.with_name(f".{target.name}.tmp")
        staging.write_text(text, encoding="utf-8")
        os.replace(staging, target)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
