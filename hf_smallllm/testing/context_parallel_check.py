"""Context parallelism checked against the unsplit run, on every rank of a launched group (torchrun): the harness
behind the CPU gloo test (tests/train/test_context_parallel.py) and the GPU check's `context_parallel` part.

Each case builds a tiny model of a family, runs two packed rows whole in this process (the reference) and split
over all ranks through `train.context_parallel` (DeepSpeed Ulysses), and reports the difference of the summed loss
and of the gradients summed over ranks. With one rank the same code runs with a group of one (the all-to-alls are
identities), which is the single-GPU path of the GPU check. On CUDA a last case measures the peak memory of one
split training step of a longer row against the memory plan (`train.memory_plan`).

    torchrun --standalone --nproc_per_node 2 -m hf_smallllm.testing.context_parallel_check OUT.json [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys

CASES = [  # (id, family, attn_implementation, packing, config overrides)
    ("tinyllama-gqa-sdpa-packed", "tinyllama", "sdpa", "document", {}),
    ("tinyllama-gqa-eager-causal", "tinyllama", "eager", "causal", {}),
    ("geb-half-rotary-interleaved-sdpa-packed", "geb", "sdpa", "document", {}),
    ("chuxin-rope-base-chunked-loss-sdpa-packed", "chuxin", "sdpa", "document",
     {"rope_theta": 160000.0, "loss_chunk_size": 16}),
    ("chuxin-yarn-eager-packed", "chuxin", "eager", "document",
     {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                          "original_max_position_embeddings": 16}}),
    ("btlm-alibi-sdpa-causal", "btlm", "sdpa", "causal", {}),
    ("btlm-alibi-factor-sdpa-packed", "btlm", "sdpa", "document", {"alibi_scaling": {"type": "linear", "factor": 2.0}}),
    ("btlm-alibi-eager-packed", "btlm", "eager", "document", {}),
]
FLASH_CASES = [
    ("chuxin-flash-packed", "chuxin", "flash_attention_2", "document", {}),
    ("tinyllama-gqa-flash-packed", "tinyllama", "flash_attention_2", "document", {}),
    ("btlm-alibi-flash-packed", "btlm", "flash_attention_2", "document", {}),
]


def _install(model, size: int):
    from ..train.context_parallel import enable_context_parallel, install_ulysses_attention, sequence_parallel_group

    if size > 1:
        return enable_context_parallel(model, size)
    group, rank = sequence_parallel_group(1)
    return install_ulysses_attention(model, group, rank, 1)


def split_versus_unsplit(family: str, attn: str, packing: str, overrides: dict, device: str = "cpu",
                         dtype=None, length: int = 64) -> dict:
    """Loss and gradient differences of 2 packed rows split over all ranks against the unsplit run (see the module
    docstring); every rank calls it, every rank gets the same numbers."""
    import numpy as np
    import torch
    import torch.distributed as dist

    from .. import FAMILIES, preset_config
    from ..data.packing import pack_rows
    from ..train.context_parallel import count_targets, shard_batch

    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    config = preset_config(family, "tiny", attn_implementation=attn, max_position_embeddings=max(64, length),
                           **overrides)
    reference = FAMILIES[family].causal_lm_class(config).train().to(device=device, dtype=dtype or torch.float32)
    split = copy.deepcopy(reference)
    ids = np.random.default_rng(1).integers(3, config.vocab_size, (2, length))
    ids[ids % 9 == 0] = config.eos_token_id  # documents of random lengths
    batch = {k: torch.from_numpy(v).to(device) for k, v in pack_rows(ids, packing, config.eos_token_id).items()}
    batch["labels"][0, length // 2 + 8:length // 2 + 12] = -100  # ignored targets inside a slice
    total = count_targets(batch)
    loss = reference(**batch, num_items_in_batch=total).loss
    loss.backward()

    _install(split, world)
    local = shard_batch(batch, rank, world)
    count = torch.tensor(count_targets(local), device=device)
    dist.all_reduce(count)
    local_loss = split(**local, num_items_in_batch=count).loss
    local_loss.backward()
    summed = local_loss.detach().clone()
    dist.all_reduce(summed)
    with torch.no_grad():  # evaluation in a context-parallel run (a callback) sees whole rows: no split, no exchange
        reference.eval(), split.eval()
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        eval_diff = float((split(**inputs).logits.float() - reference(**inputs).logits.float()).abs().max())
    grad_diff, grad_scale = 0.0, 0.0
    for want, got in zip(reference.parameters(), split.parameters(), strict=True):
        grad = got.grad.detach().clone() if got.grad is not None else torch.zeros_like(got)
        dist.all_reduce(grad)
        grad_diff = max(grad_diff, float((grad.float() - want.grad.float()).abs().max()))
        grad_scale = max(grad_scale, float(want.grad.float().abs().max()))
    return {"loss": float(loss.detach()), "split_loss": float(summed), "loss_diff": abs(float(summed - loss.detach())),
            "grad_diff": grad_diff, "grad_max": grad_scale, "targets": total, "split_targets": int(count),
            "eval_logits_diff": eval_diff}


def split_step_memory(length: int = 65536) -> dict:
    """Peak CUDA memory of one bf16 training step (checkpointing, chunked loss) of one `length`-token row split over
    all ranks, against the memory plan's activation terms for the same layout (weights and gradients taken out)."""
    import torch
    import torch.distributed as dist

    from .. import FAMILIES, preset_config
    from ..train.context_parallel import shard_batch
    from ..train.memory_plan import training_memory

    world, rank = dist.get_world_size(), dist.get_rank()
    config = preset_config("chuxin", "tiny", hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                           num_attention_heads=16, num_key_value_heads=16, vocab_size=32000, loss_chunk_size=4096,
                           max_position_embeddings=length, attn_implementation="sdpa")
    model = FAMILIES["chuxin"].causal_lm_class(config).to("cuda", torch.bfloat16).train()
    model.activation_checkpointing_enable()
    _install(model, world)
    ids = torch.randint(3, config.vocab_size, (1, length), device="cuda")
    local = shard_batch({"input_ids": ids, "labels": ids}, rank, world)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    model(**local).loss.backward()
    torch.cuda.synchronize()
    params = sum(p.numel() for p in model.parameters())
    measured = torch.cuda.max_memory_allocated() - before - 2 * params  # bf16 gradients are not activations
    estimate = training_memory(config, length, gpus=world, context_parallel=world, sharded=False, optimizer=False)
    return {"length": length, "ranks": world, "measured_activation_GiB": round(measured / 2**30, 3),
            "plan_activation_GiB": round(estimate.activations / 2**30, 3),
            "ratio": round(measured / estimate.activations, 3)}


def run(out_path: str, device: str = "cpu") -> dict:
    """Every case on this launched group; rank 0 writes {case: result} as JSON to `out_path`."""
    import importlib.util

    import torch
    import torch.distributed as dist

    from ..train.parallel import end_process_group

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 compared at 1e-5
        torch.backends.cudnn.allow_tf32 = False
    dist.init_process_group("nccl" if cuda else "gloo")
    report = {}
    cases = [(name, f, a, p, o, None) for name, f, a, p, o in CASES]
    if cuda and importlib.util.find_spec("flash_attn") is not None:  # flash-attn computes in bf16 only
        cases += [(name, f, a, p, o, torch.bfloat16) for name, f, a, p, o in FLASH_CASES]
    for name, family, attn, packing, overrides, dtype in cases:
        try:
            report[name] = split_versus_unsplit(family, attn, packing, overrides, "cuda" if cuda else "cpu", dtype)
            report[name]["dtype"] = "bfloat16" if dtype is not None else "float32"
        except Exception as error:  # noqa: BLE001 - reported per case; the other cases still run
            report[name] = {"error": f"{type(error).__name__}: {error}"[:400]}
    if cuda:
        try:
            report["memory"] = split_step_memory()
        except Exception as error:  # noqa: BLE001
            report["memory"] = {"error": f"{type(error).__name__}: {error}"[:400]}
    if dist.get_rank() == 0:
        from ..runfiles import write_text_atomic

        write_text_atomic(out_path, json.dumps(report, indent=2))
    end_process_group()
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="JSON report written by rank 0")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    run(args.out, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
