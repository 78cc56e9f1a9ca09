"""muP (maximal update parametrization) as BTLM was trained: initialisation and learning-rate groups.

With muP the hyperparameters (base learning rate, init std, multipliers) are tuned on a narrow proxy model and
transferred unchanged to the wide one. What makes them transfer is the width scaling below, taken from the Cerebras
modelzoo GPT-2/BTLM recipe (docs/architectures.md section 1.4), with m = hidden_size / mup_base_hidden_size and
m_ffn = intermediate_size / mup_base_intermediate_size (both 10 for BTLM-3B-8K, 2560/256 and 6826/682.6):

initialisation (truncated normal at +-2 sigma, base sigma = `initializer_range`, 0.073 for BTLM):
- token embeddings and an untied output head: sigma (not width-scaled);
- q/k/v and the MLP gate/up projections (fan-in = hidden size): sigma / sqrt(m);
- attention output projection: sigma / sqrt(m) / sqrt(2 * num_layers);
- MLP output projection (fan-in = MLP size): sigma / sqrt(m_ffn) / sqrt(2 * num_layers);
- biases zero, norms one (transformers' default).

learning rates (Adam):
- hidden matrices (q/k/v/o, gate/up): lr / m; MLP output projection: lr / m_ffn;
- embeddings, the output head, norms and biases: the base lr;
- no weight decay on norms and biases (AdamW's decay is multiplied by each group's lr, as in the Cerebras recipe).

The forward-pass multipliers (embeddings x `mup_embeddings_scale`, logits x alpha / m, attention scores / d) live in
`modeling_smallllm.py`; the config derives m and m_ffn (`configuration_smallllm.py`).

This file ships to the Hub as remote code: it imports only torch, transformers and its siblings.
"""

import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import initialization as init

if TYPE_CHECKING:
    from .modeling_smallllm import SmallLLMPreTrainedModel  # the model whose weights these functions set

HIDDEN_MATRICES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj")
FFN_OUTPUT_MATRICES = ("down_proj",)
# Projections that write into the residual stream: their init is further divided by sqrt(2 * num_layers).
RESIDUAL_OUTPUT_MATRICES = ("o_proj", "down_proj")
# The Cerebras recipe truncates every initialiser at two standard deviations.
INIT_TRUNCATION_SIGMAS = 2.0
# LoRA's second matrix has fan-in r (width-independent), so under muP it trains like an input layer, at the base lr.
LORA_FAN_IN_R = ("lora_B", "lora_embedding_B")

MUP_REQUIRED_MESSAGE = (
    "needs a muP config: set mup_base_hidden_size (and optionally mup_base_intermediate_size) on the model config; "
    "BTLMConfig carries BTLM's published base sizes (256 and 682.6)."
)


# ---------------------------------------------------------------------------------------------- initialisation
def mup_init_std(config, module_name: str) -> float:
    """Standard deviation of the muP initialisation of the weight of the module called `module_name` (a dotted name
    such as `model.layers.3.self_attn.o_proj`; only its last part matters). Embeddings, the output head and any
    linear layer outside the blocks get the base std."""
    std = config.initializer_range
    role = module_name.rsplit(".", 1)[-1]
    if role in FFN_OUTPUT_MATRICES:
        std /= math.sqrt(config.mup_ffn_multiplier)
    elif role in HIDDEN_MATRICES:
        std /= math.sqrt(config.mup_width_multiplier)
    if role in RESIDUAL_OUTPUT_MATRICES:
        std /= math.sqrt(2 * config.num_hidden_layers)
    return std


@torch.no_grad()
def truncated_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """Normal(0, std) cut at +-2 std, in place; a tensor already loaded from a checkpoint (`_is_hf_initialized`)
    is left alone, like transformers' `initialization` helpers.

    Drawn by rejection (transformers' normal, then the ~4.6% of draws beyond the cut redrawn until none is left):
    the same distribution as `torch.nn.init.trunc_normal_`, whose inverse-CDF method is ~10x slower on CPU, minutes
    for a 2.6B-parameter model."""
    bound = INIT_TRUNCATION_SIGMAS * std
    if tensor.device.type == "meta":  # models built without storage (init_empty_weights) get their values later
        return tensor
    if not tensor.is_contiguous():
        return init.trunc_normal_(tensor, mean=0.0, std=std, a=-bound, b=bound)
    init.normal_(tensor, mean=0.0, std=std)
    if getattr(tensor, "_is_hf_initialized", False):
        return tensor
    flat = tensor.view(-1)
    outside = torch.nonzero(flat.abs() > bound).squeeze(1)
    while outside.numel():
        flat[outside] = torch.randn(outside.numel(), dtype=flat.dtype, device=flat.device) * std
        outside = outside[flat[outside].abs() > bound]
    return tensor


def init_mup_weights(model: "SmallLLMPreTrainedModel", module: nn.Module) -> bool:
    """muP initialisation of one `module` of `model` (called from `_init_weights`, also for weights missing at
    `from_pretrained`). Returns False for modules it leaves to transformers' default init (norms, rotary buffers)."""
    config = model.config
    if not config.uses_mup:
        raise ValueError(f"muP initialisation {MUP_REQUIRED_MESSAGE}")
    if isinstance(module, nn.Embedding):
        truncated_normal_(module.weight, config.initializer_range)
        return True
    if isinstance(module, nn.Linear):
        # The role of a linear layer is its attribute name; a layer not (yet) inside the model, such as a resized
        # output head, is an output head and gets the base std.
        module_name = next((name for name, candidate in model.named_modules() if candidate is module), "")
        truncated_normal_(module.weight, mup_init_std(config, module_name))
        if module.bias is not None:
            init.zeros_(module.bias)
        return True
    return False


# ---------------------------------------------------------------------------------------------- optimizer groups
def unwrap_config_owner(model: nn.Module) -> nn.Module:
    """The module carrying `config` inside DDP/FSDP-style `module` wrappers (PEFT models forward `config` already)."""
    while getattr(model, "config", None) is None:
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            break
        model = inner
    return model


def mup_lr_role(parameter_name: str) -> str:
    """'hidden', 'ffn_output' or 'base': which muP learning-rate scaling the matrix `parameter_name` trains with.

    The role comes from the innermost hidden-matrix name in the path, so names inside wrappers resolve too
    (`...q_proj.base_layer.weight`, `...q_proj.modules_to_save.default.weight`). LoRA's A matrix (fan-in = the
    wrapped layer's fan-in) keeps the layer's role; its B matrix (fan-in = rank) trains at the base lr.
    """
    parts = parameter_name.split(".")
    for index in range(len(parts) - 1, -1, -1):
        part = parts[index]
        if part in HIDDEN_MATRICES or part in FFN_OUTPUT_MATRICES:
            if any(inner in LORA_FAN_IN_R for inner in parts[index + 1:]):
                return "base"
            return "hidden" if part in HIDDEN_MATRICES else "ffn_output"
    return "base"


def mup_param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Optimizer parameter groups for `model` (an hf_smallllm model, possibly wrapped, e.g. by PEFT or DDP).

    Returns torch-optimizer groups with `params`, `lr`, `weight_decay` and a `name` (`hidden`: lr / m,
    `ffn_output`: lr / m_ffn, `embeddings`: embeddings, output head and LoRA B matrices at lr, `no_decay`: norms and
    biases at lr without weight decay); only trainable parameters are included, each exactly once (a tied output
    head shares the embedding's group), and empty groups are left out. A learning-rate scheduler scales every group
    by the same factor, so the ratios hold for the whole run.
    """
    config = getattr(unwrap_config_owner(model), "config", None)
    if config is None or not getattr(config, "uses_mup", False):
        raise ValueError(f"muP parameter groups {MUP_REQUIRED_MESSAGE}")
    if not lr > 0:
        raise ValueError(f"lr={lr!r} must be positive.")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay={weight_decay!r} must be non-negative.")
    width, ffn = config.mup_width_multiplier, config.mup_ffn_multiplier
    groups = {
        "hidden": {"params": [], "lr": lr / width, "weight_decay": weight_decay},
        "ffn_output": {"params": [], "lr": lr / ffn, "weight_decay": weight_decay},
        "embeddings": {"params": [], "lr": lr, "weight_decay": weight_decay},
        "no_decay": {"params": [], "lr": lr, "weight_decay": 0.0},
    }
    group_of_role = {"hidden": "hidden", "ffn_output": "ffn_output", "base": "embeddings"}
    seen = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        if param.ndim < 2:  # norms, biases (and DoRA magnitudes)
            groups["no_decay"]["params"].append(param)
        else:
            groups[group_of_role[mup_lr_role(name)]]["params"].append(param)
    return [{"name": name, **group} for name, group in groups.items() if group["params"]]


__all__ = ["init_mup_weights", "mup_init_std", "mup_lr_role", "mup_param_groups"]
