"""Named configuration presets per family.

`published` is the released model (the config class defaults, each number cited in its configuration file);
`tiny` is a 2-layer, 64-wide model of the same shape family for tests and quick demos (grouped-query where the
family uses it, the same norm, position scheme, biases and tying); `small` (~60M parameters, 8 layers of 512, 32k
vocabulary) is the CPU benchmark and demo size. Other presets add sizes that the training recipes use.
"""

from typing import Any

from .configuration_btlm import BTLMConfig
from .configuration_chuxin import ChuXinConfig
from .configuration_geb import GEBConfig
from .configuration_skywork import SkyworkConfig
from .configuration_smallllm import SmallLLMConfig
from .configuration_tinyllama import TinyLlamaConfig


CONFIG_CLASSES: dict[str, type[SmallLLMConfig]] = {
    "tinyllama": TinyLlamaConfig,
    "geb": GEBConfig,
    "chuxin": ChuXinConfig,
    "btlm": BTLMConfig,
    "skywork": SkyworkConfig,
}

# ~60M parameters with a real-sized vocabulary: CPU benchmarks and quick demos that should show a learning curve.
_SMALL = {"vocab_size": 32000, "hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8,
          "num_attention_heads": 8, "max_position_embeddings": 2048}

_TINY = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2,
         "num_attention_heads": 4, "max_position_embeddings": 512}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tinyllama": {
        "published": {},
        "tiny": {**_TINY, "num_key_value_heads": 2},
        "small": {**_SMALL, "num_key_value_heads": 2},
    },
    "geb": {
        "published": {},
        "tiny": {**_TINY, "num_key_value_heads": 2, "head_dim": 16},
        "small": {**_SMALL, "num_key_value_heads": 2, "head_dim": 64},
    },
    "chuxin": {
        "published": {},
        # special ids inside the tiny vocabulary; ChuXin pads with EOS
        "tiny": {**_TINY, "num_key_value_heads": 4, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2},
        "small": {**_SMALL, "num_key_value_heads": 8, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2},
    },
    "btlm": {
        "published": {},
        # muP base at half the tiny width, so the tiny model is a 2x-wide muP model like the real one is 10x
        "tiny": {**_TINY, "intermediate_size": 170, "mup_base_hidden_size": 32.0, "mup_base_intermediate_size": 85.0,
                 "bos_token_id": 0, "eos_token_id": 0},
        "small": {**_SMALL, "intermediate_size": 1365, "mup_base_hidden_size": 256.0,
                  "mup_base_intermediate_size": 682.6, "bos_token_id": 0, "eos_token_id": 0},
    },
    "skywork": {
        "published": {},
        "tiny": {**_TINY, "num_key_value_heads": 4},
        "small": {**_SMALL, "num_key_value_heads": 8},
    },
}

FAMILY_NAMES = tuple(CONFIG_CLASSES)


def preset_config(family: str, preset: str = "published", **overrides: Any) -> SmallLLMConfig:
    """The config of `family` at `preset`, with keyword overrides applied last.

    >>> preset_config("tinyllama", "tiny", num_hidden_layers=4).num_hidden_layers
    4
    """
    if family not in CONFIG_CLASSES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILY_NAMES)}.")
    presets = PRESETS[family]
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r} for {family}; choose one of {', '.join(presets)}.")
    return CONFIG_CLASSES[family](**{**presets[preset], **overrides})


__all__ = ["CONFIG_CLASSES", "FAMILY_NAMES", "PRESETS", "preset_config"]
