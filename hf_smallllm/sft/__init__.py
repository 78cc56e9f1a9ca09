"""Instruction fine-tuning (SFT) and preference tuning (DPO) on TRL: chat templates, assistant-only labels,
LoRA/QLoRA, merge and export.

`run_sft(recipe, overrides=..., resume=..., model=..., tokenizer=...)` and `run_dpo(...)` are the entry points; the
pieces are usable on their own: `install_chat_template` (templates.py), `RecordSource`/`to_messages` (records.py),
`build_examples`/`encode_conversation` (samples.py), `build_preferences`/`to_preference` (preferences.py),
`load_base_model`/`apply_lora`/`export_merged` (adapters.py), `load_sft_recipe`/`load_dpo_recipe` (recipe.py), the
TRL trainers (trainer.py, imported on use: TRL takes a while to import).
"""

from .adapters import (
    LORA_TARGET_MODULES,
    apply_lora,
    disable_cpu_4bit_repacking,
    export_merged,
    load_base_model,
    lora_config,
    merge_adapter,
    merge_adapter_folder,
    quantization_config,
    save_model_atomic,
)
from .api import SFTResult, run_dpo, run_sft
from .preferences import build_preferences, to_preference
from .recipe import DPORecipe, SFTRecipe, load_dpo_recipe, load_sft_recipe
from .records import RecordSource, SampleError, to_messages
from .samples import SampleReport, build_examples, encode_conversation
from .templates import (
    CHAT_FORMATS,
    FAMILY_CHAT_FORMATS,
    ChatFormat,
    chat_format,
    chat_format_for,
    install_chat_template,
    stop_token_ids,
)

__all__ = [
    "CHAT_FORMATS", "FAMILY_CHAT_FORMATS", "LORA_TARGET_MODULES", "ChatFormat", "DPORecipe", "RecordSource",
    "SFTRecipe", "SFTResult", "SampleError", "SampleReport", "apply_lora", "build_examples", "build_preferences",
    "chat_format", "chat_format_for", "disable_cpu_4bit_repacking", "encode_conversation", "export_merged",
    "install_chat_template", "load_base_model", "load_dpo_recipe", "load_sft_recipe", "lora_config", "merge_adapter",
    "merge_adapter_folder", "quantization_config", "run_dpo", "run_sft", "save_model_atomic", "stop_token_ids",
    "to_messages", "to_preference",
]
