"""Weight initialisation schemes other than muP, chosen by the config field `init_scheme`.

- `"normal"` (the default): transformers' initialisation, N(0, `initializer_range`) for every linear and embedding
  weight, zero biases, unit norms.
- `"lit_gpt"`: the scheme TinyLlama was pretrained with (the `_init_weights` of `lit_gpt/model.py` in
  GH:jzhang38/TinyLlama at commit 89c75f4 "Update init", applied by `pretrain/tinyllama.py`), with d = hidden_size
  and L = num_hidden_layers:
  - token embeddings and every linear weight (q/k/v, gate/up, the output head): N(0, sqrt(2 / (5 d)));
  - the projections that write into the residual stream, attention output (lit-gpt's `proj`) and MLP down
    (xformers SwiGLU's `w3`): N(0, 1 / (sqrt(d) * L));
  - biases zero, norms one. `initializer_range` is not used.
  For TinyLlama-1.1B (d = 2048, L = 22) that is 0.01398 and 0.001004. (The repository's first commit, 09baa9e,
  differed: attention output at the general std and the MLP down projection at 1 / (sqrt(intermediate) * L); the
  later version is the one on its main branch.)

muP models (`mup_base_hidden_size` set) use muP's width-scaled init (`mup_smallllm.py`) instead; the config rejects
`init_scheme="lit_gpt"` together with muP. Meta-device models are left alone: transformers' `initialization`
helpers skip tensors already loaded from a checkpoint (`_is_hf_initialized`) and draw nothing on `meta`.

This file ships to the Hub as remote code: it imports only torch, transformers and its siblings.
"""

import math

from torch import nn
from transformers import initialization as init

# Projections that add into the residual stream (lit-gpt's attention `proj` and SwiGLU `w3`).
RESIDUAL_OUTPUT_MATRICES = ("o_proj", "down_proj")


def lit_gpt_init_std(config, module_name: str) -> float:
    """Standard deviation of lit-gpt's (TinyLlama's) init for the weight of the module `module_name` (a dotted name;
    only its last part matters): the residual-stream outputs 1 / (sqrt(d) L), everything else sqrt(2 / (5 d))."""
    d = config.hidden_size
    if module_name.rsplit(".", 1)[-1] in RESIDUAL_OUTPUT_MATRICES:
        return 1.0 / math.sqrt(d) / config.num_hidden_layers
    return math.sqrt(2.0 / (5 * d))


def init_lit_gpt_weights(model: nn.Module, module: nn.Module) -> bool:
    """lit-gpt's initialisation of one `module` of `model` (called from `_init_weights`, also for weights missing at
    `from_pretrained`). Returns False for modules it leaves to transformers' default (norms, rotary buffers)."""
    config = model.config
    if isinstance(module, nn.Embedding):
        init.normal_(module.weight, mean=0.0, std=lit_gpt_init_std(config, "embed_tokens"))
        return True
    if isinstance(module, nn.Linear):
        # the role of a linear layer is its attribute name; one not (yet) inside the model, such as a resized output
        # head, is an output head and gets the general std
        module_name = next((name for name, candidate in model.named_modules() if candidate is module), "")
        init.normal_(module.weight, mean=0.0, std=lit_gpt_init_std(config, module_name))
        if module.bias is not None:
            init.zeros_(module.bias)
        return True
    return False


__all__ = ["RESIDUAL_OUTPUT_MATRICES", "init_lit_gpt_weights", "lit_gpt_init_std"]
