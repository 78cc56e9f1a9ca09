"""Speed and quality of the CPU inference options on a model that has actually learned something.

Quality needs a trained model (a random one has the same perplexity in every precision). Without a checkpoint
this trains a small byte-level TinyLlama-shaped model on the bundled Shakespeare text for a couple of minutes
(plain AdamW loop), then compares, on held-out text: float32, float32 with oneDNN-packed linears, bfloat16,
torch dynamic int8, and bitsandbytes 8-bit and 4-bit: perplexity, its change against float32, batch-1 decode
tokens/s, and the weight memory from the state dict.
"""

import copy
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ..families import FAMILIES, preset_config
from ..resources import corpus_path
from .suite import Row, _decode_run, paired_rounds

BYTE_VOCAB = 256 + 3  # raw bytes shifted by the three special ids


def _byte_ids(text: str) -> torch.Tensor:
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long) + 3


def train_byte_model(steps: int = 300, seq_len: int = 256, batch: int = 8, seed: int = 0, progress: bool = True):
    """A small TinyLlama-shaped model trained on bytes of the bundled Shakespeare; returns (model, heldout ids)."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    text = corpus_path("en_shakespeare.txt").read_text(encoding="utf-8")
    heldout = corpus_path("validation/en_shakespeare.txt").read_text(encoding="utf-8")[:40_000]
    data = _byte_ids(text)
    config = preset_config("tinyllama", "tiny", vocab_size=BYTE_VOCAB, hidden_size=256, intermediate_size=688,
                           num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                           max_position_embeddings=1024)
    model = FAMILIES["tinyllama"].causal_lm_class(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    model.train()
    for _ in tqdm(range(steps), desc="training the quality model", disable=not progress):
        starts = torch.randint(0, len(data) - seq_len - 1, (batch,))
        ids = torch.stack([data[s : s + seq_len] for s in starts])
        loss = model(ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    return model.eval(), _byte_ids(heldout)


def perplexity(model, ids: torch.Tensor, seq_len: int = 256) -> float:
    """exp(mean token loss) over non-overlapping windows of `ids`."""
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, seq_len):
            window = ids[start : start + seq_len + 1][None]
            if window.shape[1] < 2:
                break
            logits = model(window[:, :-1]).logits.float()
            loss = torch.nn.functional.cross_entropy(logits[0], window[0, 1:], reduction="sum")
            total += loss.item()
            count += window.shape[1] - 1
    return math.exp(total / count)


def inference_option_rows(steps: int = 300, decode_steps: int = 16, repeats: int = 6) -> list[Row]:
    from ..inference.cpu_linear import can_pack_linears, pack_linears
    from ..inference.quantization import load_bnb_quantized, quantize_int8_dynamic, state_dict_bytes

    start = time.perf_counter()
    model, heldout = train_byte_model(steps)
    trained_seconds = time.perf_counter() - start
    variants = {"float32": model}
    if can_pack_linears():
        packed = copy.deepcopy(model)
        pack_linears(packed)
        variants["float32 + oneDNN-packed linears"] = packed
    variants["bfloat16"] = copy.deepcopy(model).to(torch.bfloat16)
    variants["int8 dynamic (torch.ao)"] = quantize_int8_dynamic(model)
    try:
        import bitsandbytes  # noqa: F401

        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            variants["bitsandbytes 8-bit"] = load_bnb_quantized(Path(folder), 8).eval()
            variants["bitsandbytes 4-bit (nf4)"] = load_bnb_quantized(Path(folder), 4).eval()
    except ImportError:
        pass

    from .suite import SuiteSettings

    settings = SuiteSettings(decode_steps=decode_steps, repeats=repeats)
    base_ppl = perplexity(model, heldout)
    # all variants decode in the same rounds, so that machine noise hits them alike
    runs = {label: _decode_run(variant, 1, settings, BYTE_VOCAB) for label, variant in variants.items()}
    seconds = paired_rounds(runs, repeats, self_timed=True)
    rows = []
    for label, variant in variants.items():
        ppl = perplexity(variant, heldout)
        rate = decode_steps / statistics.median(seconds[label])
        note = (f"held-out byte perplexity {ppl:.3f} ({(ppl / base_ppl - 1):+.2%} vs float32); weights "
                f"{state_dict_bytes(variant) / 2**20:.1f} MiB")
        rows.append(Row("tinyllama", f"byte model trained {steps} steps ({trained_seconds:.0f} s)",
                        f"CPU inference option: {label}", "tok/s", rate, None, note=note))
    rows.append(compiled_decoding_row(model, heldout, decode_steps, repeats,
                                      f"byte model trained {steps} steps ({trained_seconds:.0f} s)"))
    return rows


def compiled_decoding_row(model, heldout: torch.Tensor, decode_steps: int, repeats: int, size: str) -> Row:
    """`generate()` with a static cache and a torch.compile'd forward against plain `generate()` (dynamic cache),
    both float32: decode tokens/s from the time of `1 + decode_steps` new tokens minus the time of 1."""
    from ..inference.generation import enable_compiled_decoding

    compiled = copy.deepcopy(model)
    enable_compiled_decoding(compiled)
    prompt = heldout[:64][None]

    def generate(variant, new_tokens: int) -> float:
        with torch.no_grad():
            start = time.perf_counter()
            variant.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
            return time.perf_counter() - start

    def decode_seconds(variant):
        return lambda: generate(variant, 1 + decode_steps) - generate(variant, 1)

    start = time.perf_counter()
    generate(compiled, 1 + decode_steps)  # compiles
    compile_seconds = time.perf_counter() - start
    seconds = paired_rounds({"ours": decode_seconds(compiled), "reference": decode_seconds(model)}, repeats,
                            self_timed=True)
    ratios = [eager / fast for fast, eager in zip(seconds["ours"], seconds["reference"], strict=True)]
    return Row("tinyllama", size, "CPU inference option: float32 + torch.compile'd decode step (static cache), "
               "generate()", "tok/s", decode_steps / statistics.median(seconds["ours"]),
               decode_steps / statistics.median(seconds["reference"]), "float32 generate(), dynamic cache",
               note=f"same weights and logits; compiling took {compile_seconds:.0f} s", round_ratios=ratios)
