"""muP for training code: the optimizer groups of `hf_smallllm.models.mup_smallllm` as ready optimizers, for the
transformers `Trainer` and for a hand-written (Accelerate) loop.

Both build one optimizer whose parameter groups carry their own muP learning rates (hidden matrices lr / m, MLP
output lr / m_ffn, embeddings, head, norms and biases lr; no weight decay on norms and biases). A learning-rate
scheduler built on that optimizer (transformers' `get_scheduler`, torch's `LambdaLR`) multiplies every group's
initial lr by the same factor, so the muP ratios hold at every step, through warmup and decay, and across a
sequence-length stage switch that continues the schedule (BTLM's 2,048 -> 8,192; see docs/mup.md).

- Trainer: `Trainer(..., optimizer_cls_and_kwargs=mup_optimizer_cls_and_kwargs(args))` keeps `args.optim`,
  `adam_beta1/2`, `adam_epsilon`, `learning_rate`, `weight_decay` and the scheduler options; only the grouping
  changes.
- Accelerate / plain PyTorch: `optimizer = create_mup_optimizer(model, lr, weight_decay)` before
  `accelerator.prepare`.
"""

from typing import Any

import torch

from ..models.mup_smallllm import mup_param_groups

# The Cerebras BTLM recipe's AdamW (docs/architectures.md 1.2).
BTLM_ADAM_BETAS = (0.9, 0.95)
BTLM_ADAM_EPS = 1e-8


def get_mup_param_groups(model, lr: float, weight_decay: float = 0.0) -> list[dict]:
    """muP optimizer groups for `model` (hf_smallllm model, or one wrapped by PEFT/DDP/FSDP): hidden matrices at
    lr / width multiplier, MLP output at lr / MLP multiplier, embeddings/head/norms/biases at lr, no weight decay on
    norms and biases. Raises ValueError for a config without muP base sizes."""
    return mup_param_groups(model, lr, weight_decay)


def create_mup_optimizer(
    model,
    lr: float,
    weight_decay: float = 0.0,
    *,
    optimizer_cls: type[torch.optim.Optimizer] = torch.optim.AdamW,
    **optimizer_kwargs: Any,
) -> torch.optim.Optimizer:
    """`optimizer_cls` (default AdamW with BTLM's betas (0.9, 0.95) and eps 1e-8) over the muP groups of `model`.

    >>> optimizer = create_mup_optimizer(model, lr=6e-3, weight_decay=0.1)  # doctest: +SKIP
    >>> scheduler = transformers.get_scheduler("linear", optimizer, 100, 10_000)  # doctest: +SKIP
    """
    if optimizer_cls is torch.optim.AdamW or optimizer_cls is torch.optim.Adam:
        optimizer_kwargs.setdefault("betas", BTLM_ADAM_BETAS)
        optimizer_kwargs.setdefault("eps", BTLM_ADAM_EPS)
    groups = get_mup_param_groups(model, lr, weight_decay)
    return optimizer_cls(groups, lr=lr, weight_decay=weight_decay, **optimizer_kwargs)


class MupOptimizerFactory:
    """An optimizer factory in the sense of transformers' Trainer (`optimizer_cls_and_kwargs` whose first element
    is not an Optimizer class): the Trainer calls it with the model it trains (possibly PEFT-wrapped) and the
    keyword arguments, and gets the optimizer over that model's muP groups. A factory, unlike a `params` entry in
    the kwargs, is not consumed by the first `create_optimizer` call."""

    def __call__(self, model, *, optimizer_cls, optimizer_kwargs: dict, lr: float, weight_decay: float):
        return optimizer_cls(get_mup_param_groups(model, lr, weight_decay), **optimizer_kwargs)


def mup_optimizer_cls_and_kwargs(args) -> tuple[type, dict]:
    """The `optimizer_cls_and_kwargs` argument of `transformers.Trainer` that trains with muP groups, built from the
    `TrainingArguments` `args`: the optimizer `args.optim` selects (with its betas, eps and extra options) at base
    lr `args.learning_rate` and weight decay `args.weight_decay`, grouped as muP requires.

    Optimizers that build their own parameter grouping (GaLore, LOMO, layer-wise, Muon/Dion factories) cannot be
    combined with muP groups and raise ValueError.
    """
    from transformers import Trainer
    from transformers.trainer_optimizer import is_optimizer_factory

    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    clashing = sorted({"params", "model", "optimizer_dict"} & set(optimizer_kwargs))
    if is_optimizer_factory(optimizer_cls) or clashing:
        raise ValueError(
            f"optim={args.optim!r} builds its own parameter groups and cannot train with muP groups; use an "
            "AdamW/Adam-family optim (e.g. adamw_torch, adamw_torch_fused) with mup: true."
        )
    optimizer_kwargs = {**optimizer_kwargs, "lr": args.learning_rate}
    return MupOptimizerFactory, {
        "optimizer_cls": optimizer_cls,
        "optimizer_kwargs": optimizer_kwargs,
        "lr": args.learning_rate,
        "weight_decay": args.weight_decay,
    }


__all__ = [
    "BTLM_ADAM_BETAS",
    "BTLM_ADAM_EPS",
    "MupOptimizerFactory",
    "create_mup_optimizer",
    "get_mup_param_groups",
    "mup_optimizer_cls_and_kwargs",
]
