"""The registry of families: one `Family` record per family, one file per family in this folder.

A family's facts live in `families/<name>.py` and nowhere else: its config and model classes, named presets, the
layout it publishes, its tokenizer preset, chat format, snapshot-branch naming, model-card template and citation.
Every place that needs a per-family fact reads it from `FAMILIES[name]`; adding a sixth family is one new file here
plus its model file in `models/` (whose `__all__` the package exports), found by `_discover()` without editing this
one or any list elsewhere (tests/families/test_battery.py adds one).

Layering. This package sits right above `models/` and below everything else (`convert`, `tokenization`, `sft`,
`hub`, `cli`, ...). `models/` ships to the Hub as remote code, so it cannot read these records; the records in turn
hold only plain data and *names* (class names, layout names, template names, tokenizer-preset keyword arguments)
that the upper layers resolve with their own types (`convert.formats` resolves the layout, `tokenization.presets`
builds the `TokenizerPreset`, `sft.templates` the chat format, `hub.revisions` the branch template). Importing this
package imports nothing but the standard library: class names resolve to classes (importing torch) only when
`config_class` / `model_class` / `causal_lm_class` are read, so command-line parsers can list the families cheaply.

Preset sizes shared by every family (`TINY`, `SMALL`) are defined here; each family file only says what differs.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for annotations only: importing the models imports torch
    from ..models import SmallLLMConfig, SmallLLMForCausalLM, SmallLLMPreTrainedModel

# Where the class names of a record resolve: the shipped model files.
MODELS_PACKAGE = "hf_smallllm.models"

# 2 layers of 64: the same shape family as the published model, for tests and quick demos.
TINY: dict[str, Any] = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "max_position_embeddings": 512}
# ~60M parameters with a real-sized vocabulary: CPU benchmarks and quick demos that should show a learning curve.
SMALL: dict[str, Any] = {"vocab_size": 32000, "hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8,
                         "num_attention_heads": 8, "max_position_embeddings": 2048}


@dataclass(frozen=True)
class OfficialFormat:
    """What a family publishes on the Hub: the layout (a name `convert.formats` resolves) and the trust we place
    in its config.json's special-token ids."""

    layout: str  # "llama", "skywork-official", "btlm-official", "geb-official"
    repo_id: str | None = None  # the publisher's Hub repository of the final base model
    config_json_ids_trusted: bool = True  # False: its config.json's bos/eos/pad ids are known wrong
    # `model_type`s of its published config.json that the Auto classes resolve to this family's classes (never one
    # transformers owns, such as "llama", nor one shared with models the family's classes cannot run, "chatglm")
    auto_model_types: tuple[str, ...] = ()
    # The `tokenizer_class` of its published tokenizer_config.json when that is a remote-code SentencePiece class:
    # `AutoTokenizer` then loads `hf_smallllm.models.tokenization_smallllm`'s fast stand-in under that name.
    tokenizer_class: str | None = None
    tokenizer_model_file: str = "tokenizer.model"  # that class's SentencePiece model file
    tokenizer_added_tokens: tuple[str, ...] = ()  # what that class appends after the SentencePiece vocabulary
    tokenizer_adds_bos: bool = True


@dataclass(frozen=True)
class GGUFFormat:
    """What the family becomes in a llama.cpp GGUF file (`convert.gguf`): the llama.cpp architecture whose graph
    computes it, and the llama.cpp tokenizer model (and byte-level pre-tokenizer) of its published tokenizer."""

    architecture: str  # a key of `hf_smallllm.layouts.GGUF_ARCHITECTURES`: "llama", "chatglm", "jais"
    tokenizer: str  # "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    pre_tokenizer: str | None = None  # llama.cpp's name of the byte-level split rules ("deepseek-llm", "gpt-2")


@dataclass(frozen=True)
class Citation:
    """The paper that introduced the architecture, as the model card cites it."""

    arxiv: str
    bibtex: str


@dataclass(frozen=True)
class Family:
    """Everything the package knows about one family. Class names resolve in `hf_smallllm.models`."""

    name: str
    title: str  # the architecture's name in prose and model cards, e.g. "BTLM-3B-8K"
    config_class_name: str
    model_class_name: str
    causal_lm_class_name: str
    presets: dict[str, dict[str, Any]]  # preset name -> config overrides; "published" is the class defaults
    official: OfficialFormat
    tokenizer: dict[str, Any]  # keyword arguments of `tokenization.presets.TokenizerPreset`
    chat_format: str  # a name in `sft.templates.CHAT_FORMATS`
    model_card: str  # a template in `hf_smallllm/resources/model_cards/` (rendered with `title` and `citation`)
    citation: Citation
    branch_template: str | None = None  # how the family's own snapshots are named on the Hub, if it publishes any
    # where the family publishes snapshots as sub-folders of one branch instead (`{tokens_t}`: trillions of tokens)
    snapshot_subfolder_template: str | None = None
    # checkpoints published as repositories of their own: (repo id, step, tokens as the name gives them)
    milestone_repos: tuple[tuple[str, int, int], ...] = ()
    gguf: GGUFFormat | None = None  # how llama.cpp runs it (None: no llama.cpp architecture expresses it)

    @property
    def config_class(self) -> type[SmallLLMConfig]:
        return _model_attribute(self.config_class_name)

    @property
    def model_class(self) -> type[SmallLLMPreTrainedModel]:
        return _model_attribute(self.model_class_name)

    @property
    def causal_lm_class(self) -> type[SmallLLMForCausalLM]:
        return _model_attribute(self.causal_lm_class_name)

    def preset(self, preset: str = "published", **overrides: Any) -> SmallLLMConfig:
        """The config at `preset`, with keyword overrides applied last."""
        if preset not in self.presets:
            raise ValueError(f"unknown preset {preset!r} for {self.name}; choose one of {', '.join(self.presets)}.")
        return self.config_class(**{**self.presets[preset], **overrides})


def _model_attribute(name: str) -> Any:
    return getattr(importlib.import_module(MODELS_PACKAGE), name)


def _discover() -> dict[str, Family]:
    """Every `FAMILY` record of a module in this package, in the order of `ORDER` (then by name)."""
    found = {}
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        family = getattr(module, "FAMILY", None)
        if not isinstance(family, Family):
            raise TypeError(f"{module.__name__} must define FAMILY = Family(...)")
        if family.name != module_info.name:
            raise ValueError(f"{module.__name__} defines family {family.name!r}; the file must be named after it")
        found[family.name] = family
    order = {name: index for index, name in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


# The order families are listed in (help texts, error messages): the package's historical order; a new family
# needs no entry and is listed after these, by name.
ORDER = ("tinyllama", "geb", "chuxin", "btlm", "skywork")

FAMILIES: dict[str, Family] = _discover()
FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)
PRESETS: dict[str, dict[str, dict[str, Any]]] = {name: family.presets for name, family in FAMILIES.items()}
# What a config that belongs to no family (a custom `SmallLLMConfig`) is called.
GENERIC_FAMILY = "smallllm"


def get_family(name: str) -> Family:
    """The record of `name`; a ValueError lists the known families."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; choose one of {', '.join(FAMILY_NAMES)}.")
    return FAMILIES[name]


def preset_config(family: str, preset: str = "published", **overrides: Any):
    """The config of `family` at `preset`, with keyword overrides applied last.

    >>> preset_config("tinyllama", "tiny", num_hidden_layers=4).num_hidden_layers
    4
    """
    return get_family(family).preset(preset, **overrides)


def family_of(config) -> str:
    """The family name of a config (or of a model's config); the generic `SmallLLMConfig` is "smallllm"."""
    for family in FAMILIES.values():
        if type(config) is family.config_class:
            return family.name
    return GENERIC_FAMILY


def register() -> None:
    """Register the generic config and every family with transformers' Auto classes, and the official layouts with
    transformers' on-load weight conversion; safe to call more than once."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
    from transformers.conversion_mapping import register_checkpoint_conversion_mapping

    from ..layouts import OFFICIAL_LAYOUTS, weight_transforms
    from ..models import SmallLLMConfig, SmallLLMForCausalLM, SmallLLMModel

    pairs = [(SmallLLMConfig, SmallLLMModel, SmallLLMForCausalLM)] + [
        (f.config_class, f.model_class, f.causal_lm_class) for f in FAMILIES.values()
    ]
    for config_class, model_class, causal_lm_class in pairs:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        AutoModelForCausalLM.register(config_class, causal_lm_class, exist_ok=True)
        # Every save_pretrained then writes the model files and an `auto_map` (remote code for processes without
        # the package); loading with the package imported still uses these classes, trust_remote_code or not.
        config_class.register_for_auto_class("AutoConfig")
        model_class.register_for_auto_class("AutoModel")
        causal_lm_class.register_for_auto_class("AutoModelForCausalLM")
    # official BTLM/GEB folders convert on load, with transforms generated from their layout tables
    for layout in OFFICIAL_LAYOUTS:
        for model_type in layout.loads_into:
            register_checkpoint_conversion_mapping(model_type, weight_transforms(layout), overwrite=True)
    _register_official_repositories()


def _register_official_repositories() -> None:
    """The official Hub repositories load through the Auto classes into the package's classes, without running their
    code: their config.json `model_type` resolves to the family's config class, and the `tokenizer_class` of their
    tokenizer_config.json to the package's fast stand-in.

    Both go in as transformers' *explicit local code* (a class registered by name, not defined in transformers), which
    transformers prefers over a repository's `auto_map` even with `trust_remote_code=True` (`AutoConfig`,
    `_BaseAutoModelClass` and `AutoTokenizer.from_pretrained` check `explicit_local_code` first). `AutoConfig.register`
    cannot be used for the config (it requires the class's own `model_type`, and the package's is
    `smallllm_<family>`), so the name goes into `CONFIG_MAPPING` itself. The tokenizer class goes into transformers'
    by-name registry only: `AutoTokenizer.register` would also map the config class to it, and a config class with a
    registered tokenizer stops counting as explicit local code, which lets `trust_remote_code=True` run the
    repository's tokenizer file."""
    from transformers import CONFIG_MAPPING
    from transformers.models.auto import tokenization_auto

    from ..models.tokenization_smallllm import official_tokenizer_class

    for family in FAMILIES.values():
        for model_type in family.official.auto_model_types:
            CONFIG_MAPPING.register(model_type, family.config_class, exist_ok=True)
        if family.official.tokenizer_class:
            name = family.official.tokenizer_class
            tokenization_auto.REGISTERED_TOKENIZER_CLASSES[name] = official_tokenizer_class(
                name, family.official.tokenizer_model_file, family.official.tokenizer_added_tokens,
                family.official.tokenizer_adds_bos, replaces=f"{family.title}'s remote-code {name}")


__all__ = ["FAMILIES", "FAMILY_NAMES", "GENERIC_FAMILY", "PRESETS", "TINY", "SMALL", "Citation", "Family",
           "OfficialFormat", "family_of", "get_family", "preset_config", "register"]
