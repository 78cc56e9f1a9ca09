"""FSDP2 sharding of a model: `fully_shard` on every decoder layer, then on the whole model.

Each decoder layer becomes one communication unit (its parameters are all-gathered just before the layer runs and
freed after), and the root call shards what is left (embeddings, final norm, LM head; tied embeddings stay one
parameter). This is the wrapping accelerate's FSDP2 plugin applies with
`fsdp_transformer_layer_cls_to_wrap: <Family>DecoderLayer` (see `training/accelerate/fsdp.yaml`). `run.build_run`
calls it where FSDP2 is asked for but accelerate cannot shard (CPU processes, where accelerate alone would run DDP),
and it serves raw-torch loops.
"""

import torch
from torch import nn


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The model's decoder layers (`model.model.layers` for a causal LM, `model.layers` for a base model)."""
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no decoder layers at .model.layers or .layers")
    return list(layers)


def apply_fsdp2(model: nn.Module, mesh=None, reshard_after_forward: bool = True, mp_policy=None) -> nn.Module:
    """Shard `model` in place with FSDP2 over `mesh` (default: all ranks of the initialised process group, on CUDA
    when available, else CPU/gloo) and return it. `mp_policy` is a `torch.distributed.fsdp.MixedPrecisionPolicy`,
    e.g. bf16 parameters with fp32 gradient reduction."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not dist.is_initialized():
        raise RuntimeError("apply_fsdp2 needs an initialised process group (torchrun, or dist.init_process_group)")
    if mesh is None:
        mesh = init_device_mesh("cuda" if torch.cuda.is_available() else "cpu", (dist.get_world_size(),))
    kwargs = {"mesh": mesh, "reshard_after_forward": reshard_after_forward}
    if mp_policy is not None:
        kwargs["mp_policy"] = mp_policy
    for layer in decoder_layers(model):
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict of an FSDP2 model, gathered to CPU on every rank (for saving or comparing)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


__all__ = ["apply_fsdp2", "decoder_layers", "full_state_dict"]
