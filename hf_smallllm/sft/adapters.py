"""PEFT for every family: LoRA on the attention and MLP projections, QLoRA on a bitsandbytes 4-bit base (CPU too),
8-bit/4-bit loading through `BitsAndBytesConfig`, and merging an adapter back into a full-precision model.

All five families use transformers' Llama parameter names, so one target list serves every variant:
`q_proj, k_proj, v_proj, o_proj` (attention) and `gate_proj, up_proj, down_proj` (MLP).

bitsandbytes CPU trap (bitsandbytes 0.50, see the project's ECOSYSTEM notes, section 2): the first time a
`Linear4bit` runs in eval mode on a CPU input that needs no grad (any evaluation pass, or `generate`), it repacks its
weight into a CPU-only layout. From then on its matmul passes no gradient to its input: LoRA adapters before it get
no (or wrong) gradients and QLoRA silently stops learning; with sizes the repacking does not support (e.g. an
intermediate size of 172) the eval forward fails instead. `disable_cpu_4bit_repacking` switches that repacking off
on every `Linear4bit`; `load_base_model` applies it right after loading, before anything can run an eval forward.
"""

import os
from pathlib import Path

import torch

from ..errors import UsageFileNotFoundError
from ..runfiles import atomic_folder

LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
QUANTIZATION_MODES = ("none", "8bit", "4bit")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def quantization_config(mode: str, quant_type: str = "nf4", compute_dtype: str = "float32",
                        double_quant: bool = True):
    """A `BitsAndBytesConfig` for "8bit"/"4bit", None for "none"."""
    if mode not in QUANTIZATION_MODES:
        raise ValueError(f"quantization={mode!r}; choose one of {QUANTIZATION_MODES}")
    if mode == "none":
        return None
    from transformers import BitsAndBytesConfig

    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quant_type not in ("nf4", "fp4"):
        raise ValueError(f"bnb_4bit_quant_type={quant_type!r}; choose nf4 or fp4")
    if compute_dtype not in DTYPES:
        raise ValueError(f"bnb_4bit_compute_dtype={compute_dtype!r}; choose one of {sorted(DTYPES)}")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                              bnb_4bit_compute_dtype=DTYPES[compute_dtype], bnb_4bit_use_double_quant=double_quant)


def disable_cpu_4bit_repacking(model) -> int:
    """Keep every bitsandbytes `Linear4bit` on its trainable path (see the module docstring). Returns how many
    layers were switched; 0 when the model has none (or bitsandbytes is not installed)."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def load_base_model(source, quantization: str = "none", attn_implementation: str = "sdpa",
                    dtype: str = "float32", **quant_options):
    """The model to fine-tune from a `save_pretrained` folder (or a Hub name in the cache), optionally quantized
    with bitsandbytes; a model instance is returned as is (it cannot be quantized after the fact)."""
    if not isinstance(source, (str, os.PathLike)):
        if quantization != "none":
            raise ValueError("quantization needs a checkpoint path to load from, not a model instance")
        return source
    from transformers import AutoModelForCausalLM

    config = quantization_config(quantization, **quant_options)
    kwargs = {"attn_implementation": attn_implementation, "dtype": DTYPES[dtype]}
    if config is not None:
        kwargs.update(quantization_config=config, device_map="cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(str(source), **kwargs)
    disable_cpu_4bit_repacking(model)
    return model


def lora_config(r: int = 8, alpha: int = 16, dropout: float = 0.05, target_modules=LORA_TARGET_MODULES,
                new_token_ids: list[int] | None = None, tied_embeddings: bool = True):
    """A causal-LM `LoraConfig`; `new_token_ids` (tokens added for the chat template) get trainable embedding rows
    through PEFT's trainable tokens instead of a full embedding copy. Their rows of an untied output head stay at
    the mean initialisation: TRL computes the loss through its own fused head, which reads `lm_head.bias`, and
    PEFT's trainable-token wrapper exposes only `weight` (`tied_embeddings` is kept for callers; a tied head shares
    the trained rows)."""
    from peft import LoraConfig

    trainable_tokens = {"embed_tokens": list(new_token_ids)} if new_token_ids else None
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                      task_type="CAUSAL_LM", bias="none", trainable_token_indices=trainable_tokens)


def apply_lora(model, config, quantized: bool = False, gradient_checkpointing: bool = False):
    """Wrap `model` in a PEFT LoRA model; a quantized base is first prepared for k-bit training (norms in fp32,
    input grads enabled)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    peft_model = get_peft_model(model, config)
    disable_cpu_4bit_repacking(peft_model)
    return peft_model


def save_model_atomic(model, output_dir, tokenizer=None, generation_config=None) -> Path:
    """`save_pretrained` (and the tokenizer) into a temporary folder, renamed into place only when complete."""
    with atomic_folder(output_dir) as staging:
        if generation_config is not None:
            model.generation_config = generation_config
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
    return Path(output_dir)


def merge_adapter(peft_model):
    """The base model with the LoRA deltas added into its weights (PEFT's `merge_and_unload`); trainable token rows
    are written into the embedding too. For a quantized base use `merge_adapter_folder`, which merges into a
    full-precision copy."""
    merged = peft_model.merge_and_unload()
    merged.config.use_cache = True
    return merged


def merge_adapter_folder(adapter_dir, base=None, dtype: str = "float32"):
    """Load the base model in full precision (`base`: a folder or model; default: the adapter's
    `base_model_name_or_path`), apply the adapter saved in `adapter_dir`, and merge it."""
    from peft import PeftConfig, PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise UsageFileNotFoundError(f"{adapter_dir} holds no adapter (adapter_config.json missing)")
    if base is None:
        base = PeftConfig.from_pretrained(adapter_dir).base_model_name_or_path
        if not base:
            raise ValueError(f"{adapter_dir}: the adapter does not name its base model; pass the base model")
    base_model = load_base_model(base, dtype=dtype)
    if (adapter_dir / "tokenizer_config.json").exists():
        from transformers import AutoTokenizer

        from .templates import resize_embeddings_for

        resize_embeddings_for(base_model, AutoTokenizer.from_pretrained(adapter_dir))
    model = PeftModel.from_pretrained(base_model, adapter_dir)
    return merge_adapter(model)


def export_merged(adapter_dir, output_dir, base=None, dtype: str = "float32") -> Path:
    """Merge the adapter in `adapter_dir` into its base and save the result in the package format (a complete
    `save_pretrained` folder with the adapter folder's tokenizer), atomically."""
    merged = merge_adapter_folder(adapter_dir, base, dtype)
    tokenizer = None
    if (Path(adapter_dir) / "tokenizer_config.json").exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    return save_model_atomic(merged, output_dir, tokenizer)


__all__ = ["LORA_TARGET_MODULES", "QUANTIZATION_MODES", "apply_lora", "disable_cpu_4bit_repacking", "export_merged",
           "load_base_model", "lora_config", "merge_adapter", "merge_adapter_folder", "quantization_config",
           "save_model_atomic"]
