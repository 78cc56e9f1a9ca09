"""Run under torchrun by the distributed tests (not collected by pytest)."""

import json
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


if __name__ == "__main__":
    {"fsdp2": fsdp2}[sys.argv[1]](*sys.argv[2:])
