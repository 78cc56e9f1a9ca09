"""Instruction and preference tuning on TRL's `SFTTrainer` and `DPOTrainer` (runs under `accelerate launch` /
`torchrun` unchanged).

TRL does the training: batching, BFD packing with per-sample position ids (padding-free rows that the model
attends within sample by sample), the loss on assistant tokens, DPO's reference log-probabilities (from an explicit
reference model, or from the policy with its LoRA adapters disabled) and its metrics. What it lacks comes from the
package's recipe trainer (`sft.recipe_trainer.RecipeTrainer`, mixed in first): the recipe's optimizer and lr
schedule (the same as pretraining), atomic checkpoints (written into `.tmp-checkpoint-<step>`, renamed when
complete; one also at the last step), `metrics.jsonl` via the `RunLogger` callback, and resuming.

TRL's defaults that are wrong on CPU are set explicitly from the recipe: `bf16` (TRL turns bf16 autocast on unless
fp16 is asked for; the in-memory model then differs from the saved one by ~0.03 in the logits) and
`gradient_checkpointing` (on by default in TRL; slower, and pointless for small models). TRL also casts the
adapters of a quantized (QLoRA) model to bf16 after wrapping it; on CPU they are cast back to float32, the dtype
bitsandbytes' CPU 4-bit matmul computes in.
"""

import torch
from transformers import TrainerCallback, TrainingArguments
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from ..train.arguments import shared_training_kwargs
from .recipe_trainer import RecipeTrainer

# transformers 5.25 renamed `gradient_checkpointing` to `activation_checkpointing` (the old name, which TRL sets to
# True by default, is read only while the new one is unset)
CHECKPOINTING = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
                 else "gradient_checkpointing")


def _recipe_kwargs(recipe, has_eval: bool) -> dict:
    training = recipe.training
    return {
        **shared_training_kwargs(recipe),
        "num_train_epochs": training.num_epochs,
        "per_device_train_batch_size": training.per_device_batch_size,
        "per_device_eval_batch_size": training.per_device_batch_size,
        "eval_strategy": "steps" if has_eval and training.eval_steps else "no",
        "eval_steps": training.eval_steps if has_eval else None,
        CHECKPOINTING: recipe.model.gradient_checkpointing,  # TRL's default is True
        "dataset_num_proc": None,
    }


def sft_config(recipe, has_eval: bool) -> SFTConfig:
    """TRL's SFTConfig for a recipe whose data is already tokenized (`input_ids`, `labels` with -100 outside the
    assistant's replies). `data.packing` packs whole samples into rows of `data.seq_len` (BFD)."""
    data = recipe.data
    return SFTConfig(
        **_recipe_kwargs(recipe, has_eval),
        max_length=(data.seq_len or data.max_length) if data.packing else data.max_length,
        packing=data.packing,
        packing_strategy="bfd",
        shuffle_dataset=False,  # the Trainer's seeded sampler shuffles; the recorded data report stays in order
        label_names=["labels"],
    )


def dpo_config(recipe, has_eval: bool) -> DPOConfig:
    """TRL's DPOConfig: the recipe's `dpo` section (beta, loss, reference log-probabilities) and length limit."""
    dpo = recipe.dpo
    return DPOConfig(
        **_recipe_kwargs(recipe, has_eval),
        max_length=recipe.data.max_length,
        beta=dpo.beta,
        loss_type=[dpo.loss_type],
        label_smoothing=dpo.label_smoothing,
        precompute_ref_log_probs=dpo.precompute_ref_log_probs,
        disable_dropout=True,
    )


class SaveAtEnd(TrainerCallback):
    """A checkpoint at the last step too, whatever save_steps is."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = True


def _keep_cpu_adapters_in_float32(model) -> None:
    if torch.cuda.is_available():
        return
    for param in model.parameters():
        if param.requires_grad and param.dtype == torch.bfloat16:
            param.data = param.data.float()


class SmallLLMSFTTrainer(RecipeTrainer, SFTTrainer):
    """TRL's SFTTrainer with the recipe's optimizer, schedule and atomic checkpoints (one at the last step)."""

    def __init__(self, *args, recipe, **kwargs):
        super().__init__(*args, recipe=recipe, **kwargs)
        _keep_cpu_adapters_in_float32(self.model)
        self.add_callback(SaveAtEnd())


class SmallLLMDPOTrainer(RecipeTrainer, DPOTrainer):
    """TRL's DPOTrainer with the recipe's optimizer, schedule and atomic checkpoints (one at the last step)."""

    def __init__(self, *args, recipe, **kwargs):
        super().__init__(*args, recipe=recipe, **kwargs)
        _keep_cpu_adapters_in_float32(self.model)
        self.add_callback(SaveAtEnd())


__all__ = ["SaveAtEnd", "SmallLLMDPOTrainer", "SmallLLMSFTTrainer", "dpo_config", "sft_config"]
