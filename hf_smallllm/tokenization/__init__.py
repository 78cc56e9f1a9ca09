"""Tokenizers for the five families: train each family's kind (DeepSeek-style and GPT-2-style byte-level BPE,
Llama-style BPE with byte fallback) from local files or a `datasets` dataset, load official tokenizer files and GGUF
vocabularies exactly, and align a model config's special-token ids with its tokenizer."""

from .alignment import align_config_with_tokenizer, special_token_behaviour
from .official import load_gguf_tokenizer, load_tokenizer
from .presets import TOKENIZER_PRESETS, TokenizerPreset, tokenizer_preset
from .training import iter_training_texts, save_tokenizer, train_tokenizer

__all__ = [
    "TOKENIZER_PRESETS", "TokenizerPreset", "align_config_with_tokenizer", "iter_training_texts",
    "load_gguf_tokenizer", "load_tokenizer", "save_tokenizer", "special_token_behaviour", "tokenizer_preset",
    "train_tokenizer",
]
