"""The optimizer of a training run: AdamW without weight decay on norms and biases, or muP's groups."""

import torch

from .mup import get_mup_param_groups


def param_groups(model, lr: float, weight_decay: float) -> list[dict]:
    """Two AdamW groups: matrices and embeddings with weight decay; norms and biases (1-D) without."""
    decay, no_decay = [], []
    seen = set()
    for _, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (no_decay if param.ndim < 2 else decay).append(param)
    groups = [{"name": "decay", "params": decay, "lr": lr, "weight_decay": weight_decay},
              {"name": "no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model, optimizer_section) -> torch.optim.AdamW:
    """AdamW from a recipe's `optimizer` section (muP groups when `mup: true`)."""
    section = optimizer_section
    if section.mup:
        groups = get_mup_param_groups(model, section.lr, section.weight_decay)
    else:
        groups = param_groups(model, section.lr, section.weight_decay)
    return torch.optim.AdamW(groups, lr=section.lr, betas=tuple(section.betas), eps=section.eps,
                             weight_decay=section.weight_decay)


__all__ = ["build_optimizer", "param_groups"]
