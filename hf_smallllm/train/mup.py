"""muP for training code: the optimizer groups of `hf_smallllm.models.mup_smallllm`, usable on any wrapped model."""

from ..models.mup_smallllm import mup_param_groups


def get_mup_param_groups(model, lr: float, weight_decay: float = 0.0) -> list[dict]:
    """muP optimizer groups for `model` (hf_smallllm model, or one wrapped by PEFT/DDP/FSDP): hidden matrices at
    lr / width multiplier, MLP output at lr / MLP multiplier, embeddings/head/norms/biases at lr, no weight decay on
    norms and biases. Raises ValueError for a config without muP base sizes."""
    return mup_param_groups(model, lr, weight_decay)


__all__ = ["get_mup_param_groups"]
