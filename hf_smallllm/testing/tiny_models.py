"""Tiny random models for tests, checks and layout fixtures."""

from __future__ import annotations


def tiny_random_model(family: str, seed: int = 0, **config_overrides):
    """A randomly initialised model of `family` at the "tiny" preset, in eval mode, with its norm weights and biases
    moved away from their initial values, so that a wrong norm, bias or tying shows in the logits."""
    import torch

    from ..families import FAMILIES, preset_config

    torch.manual_seed(seed)
    model = FAMILIES[family].causal_lm_class(preset_config(family, "tiny", **config_overrides)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                param.add_(torch.randn_like(param) * 0.1)
    return model


__all__ = ["tiny_random_model"]
