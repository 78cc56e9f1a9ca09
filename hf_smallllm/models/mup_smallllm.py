"""muP (maximal update parametrization) learning-rate groups, as BTLM was trained (Cerebras modelzoo recipe).

With muP the base learning rate is tuned on a narrow proxy model and transferred to the wide one; what transfers
is the *per-group* scaling below (ARCHITECTURES.md section 1.4):

- hidden matrices (attention q/k/v/o, MLP gate and up projections): lr / width multiplier;
- MLP output projection (down): lr / MLP width multiplier;
- embeddings, the output head, norms and biases: the base lr;
- no weight decay on norms and biases.

This file ships to the Hub as remote code: it imports only torch and its siblings.
"""

from torch import nn

HIDDEN_MATRICES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj")
FFN_OUTPUT_MATRICES = ("down_proj",)


def mup_param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Optimizer parameter groups for `model` (an hf_smallllm model, possibly wrapped, e.g. by PEFT or DDP).

    Returns torch-optimizer groups with `params`, `lr`, `weight_decay` and a `name`; only trainable parameters are
    included and each appears exactly once (a tied output head shares the embedding's group).
    """
    config = getattr(model, "config", None)
    while config is None and hasattr(model, "module"):  # DDP / FSDP wrappers
        model = model.module
        config = getattr(model, "config", None)
    if config is None or not getattr(config, "uses_mup", False):
        raise ValueError(
            "muP parameter groups need a muP config: set mup_base_hidden_size (and optionally "
            "mup_base_intermediate_size) on the model config; BTLMConfig has BTLM's published base sizes."
        )
    width, ffn = config.mup_width_multiplier, config.mup_ffn_multiplier
    groups = {
        "hidden": {"params": [], "lr": lr / width, "weight_decay": weight_decay},
        "ffn_output": {"params": [], "lr": lr / ffn, "weight_decay": weight_decay},
        "embeddings": {"params": [], "lr": lr, "weight_decay": weight_decay},
        "no_decay": {"params": [], "lr": lr, "weight_decay": 0.0},
    }
    seen = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        parts = name.split(".")
        module_name = parts[-2] if len(parts) >= 2 else ""
        if param.ndim < 2:  # norms and biases
            groups["no_decay"]["params"].append(param)
        elif module_name in FFN_OUTPUT_MATRICES:
            groups["ffn_output"]["params"].append(param)
        elif module_name in HIDDEN_MATRICES:
            groups["hidden"]["params"].append(param)
        else:  # token embeddings and the output head (LoRA adapters also land here, at the base lr)
            groups["embeddings"]["params"].append(param)
    return [{"name": name, **group} for name, group in groups.items() if group["params"]]


__all__ = ["mup_param_groups"]
