"""Run under torchrun by the distributed tests (not collected by pytest)."""

import json
import os
import signal
import sys

import torch
import torch.distributed as dist


def fsdp2(tokens_path: str, out_path: str) -> None:
    """Shard a tiny model with apply_fsdp2 over 2 CPU ranks, train 3 steps on this rank's half of each batch, and
    write the gathered parameters and what the sharding looked like."""
    from torch.distributed.tensor import DTensor, Shard

    from hf_smallllm import preset_config
    from hf_smallllm.families import FAMILIES
    from hf_smallllm.train.fsdp import apply_fsdp2, full_state_dict

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = FAMILIES["tinyllama"].causal_lm_class(preset_config("tinyllama", "tiny"))
    apply_fsdp2(model)
    q_proj = model.model.layers[0].self_attn.q_proj.weight
    report = {"dtensor": isinstance(q_proj, DTensor), "placements": [str(p) for p in q_proj.placements],
              "local_shape": list(q_proj.to_local().shape), "full_shape": list(q_proj.shape),
              "shard0": q_proj.placements == (Shard(0),)}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batches = torch.load(tokens_path)
    for batch in batches:
        local = batch.chunk(world)[rank]
        loss = model(input_ids=local, labels=local).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    state = full_state_dict(model)
    if rank == 0:
        torch.save(state, out_path)
        with open(out_path + ".json", "w") as f:
            json.dump(report, f)
    dist.destroy_process_group()


def pretrain(recipe_path: str, *options: str) -> None:
    """`run_pretraining` on this rank, with `--resume`, and `--kill-rank R --kill-at S`: rank R kills itself with
    SIGKILL when step S begins (a node lost mid-run, after the checkpoints before S were written)."""
    from transformers import TrainerCallback

    from hf_smallllm.train import run_pretraining

    options = list(options)
    callbacks = []
    if "--kill-rank" in options:
        kill_rank = int(options[options.index("--kill-rank") + 1])
        kill_at = int(options[options.index("--kill-at") + 1])

        class KillAt(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if state.global_step == kill_at and int(os.environ.get("RANK", "0")) == kill_rank:
                    os.kill(os.getpid(), signal.SIGKILL)

        callbacks.append(KillAt())
    run_pretraining(recipe_path, resume="--resume" in options, extra_callbacks=callbacks)


CONTEXT_PARALLEL_CASES = [  # (id, family, attn_implementation, packing, config overrides)
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


def context_parallel(out_path: str) -> None:
    """Each case of CONTEXT_PARALLEL_CASES: the loss and gradients of 2 packed rows split over all ranks by
    `enable_context_parallel` + `shard_batch` against the same model run unsplit in this process."""
    import copy

    import numpy as np

    from hf_smallllm import preset_config
    from hf_smallllm.data.packing import pack_rows
    from hf_smallllm.families import FAMILIES
    from hf_smallllm.train.context_parallel import count_targets, enable_context_parallel, shard_batch

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    report = {}
    for name, family, attn, packing, overrides in CONTEXT_PARALLEL_CASES:
        torch.manual_seed(0)
        config = preset_config(family, "tiny", attn_implementation=attn, max_position_embeddings=64, **overrides)
        reference = FAMILIES[family].causal_lm_class(config).train()
        split = copy.deepcopy(reference)
        generator = np.random.default_rng(1)
        ids = generator.integers(3, config.vocab_size, (2, 64))
        ids[ids % 9 == 0] = config.eos_token_id  # documents of random lengths
        batch = {k: torch.from_numpy(v) for k, v in pack_rows(ids, packing, config.eos_token_id).items()}
        batch["labels"][0, 40:44] = -100  # ignored targets that straddle nothing in particular
        total = count_targets(batch)
        loss = reference(**batch, num_items_in_batch=total).loss
        loss.backward()

        enable_context_parallel(split, world, seq_lens=[64])
        local = shard_batch(batch, rank, world)
        count = torch.tensor(count_targets(local))
        dist.all_reduce(count)
        local_loss = split(**local, num_items_in_batch=count).loss
        local_loss.backward()
        summed = local_loss.detach().clone()
        dist.all_reduce(summed)
        grad_diff = 0.0
        for (param_name, want), got in zip(reference.named_parameters(), split.parameters(), strict=True):
            grad = got.grad.clone() if got.grad is not None else torch.zeros_like(got)
            dist.all_reduce(grad)
            grad_diff = max(grad_diff, float((grad - want.grad).abs().max()))
        report[name] = {"loss": float(loss), "split_loss": float(summed), "loss_diff": abs(float(summed - loss)),
                        "grad_diff": grad_diff, "targets": total, "split_targets": int(count)}
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(report, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    {"fsdp2": fsdp2, "pretrain": pretrain, "context_parallel": context_parallel}[sys.argv[1]](*sys.argv[2:])
