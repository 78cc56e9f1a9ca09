"""Run under torchrun by the distributed tests (not collected by pytest)."""

import faulthandler
import json
import os
import signal
import sys

import torch
import torch.distributed as dist

from hf_smallllm.train.parallel import end_process_group

faulthandler.enable()  # a rank that aborts (SIGABRT from C++) prints where each of its Python threads was


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
    end_process_group()


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
    end_process_group()


def context_parallel(out_path: str) -> None:
    """Every case of the context-parallel harness (hf_smallllm/testing/context_parallel_check.py) on these ranks."""
    from hf_smallllm.testing.context_parallel_check import run

    run(out_path, "cpu")


if __name__ == "__main__":
    {"fsdp2": fsdp2, "pretrain": pretrain, "context_parallel": context_parallel}[sys.argv[1]](*sys.argv[2:])
