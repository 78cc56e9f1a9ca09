"""The `transformers.TrainingArguments` of a recipe: what the pretraining engine hands its callbacks (which read
output_dir, save_steps, logging_steps, ...) and the base of the SFT/DPO configs (TRL's configs extend them).
"""

import os

import torch
from transformers import TrainingArguments

from .recipe import Recipe, RecipeError


def shared_training_kwargs(recipe) -> dict:
    """The TrainingArguments every run of this package shares (pretraining and SFT): optimizer numbers, precision,
    checkpointing, logging and the CPU/gloo choices, from the recipe's `training` and `optimizer` sections."""
    training, opt = recipe.training, recipe.optimizer
    on_cpu = not torch.cuda.is_available()
    if training.precision == "fp16" and on_cpu:
        raise RecipeError("training.precision: fp16 needs a GPU; use bf16 or fp32 on CPU")
    return dict(
        output_dir=training.output_dir,
        max_steps=training.max_steps,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        learning_rate=opt.lr,
        weight_decay=opt.weight_decay,
        adam_beta1=opt.betas[0],
        adam_beta2=opt.betas[1],
        adam_epsilon=opt.eps,
        max_grad_norm=opt.max_grad_norm or None,
        logging_steps=training.logging_steps,
        save_strategy="steps",
        save_steps=training.save_steps,
        save_total_limit=training.save_total_limit,
        bf16=training.precision == "bf16",
        fp16=training.precision == "fp16",
        use_cpu=on_cpu,
        ddp_backend="gloo" if on_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        seed=training.seed,
        data_seed=training.seed,
        report_to=["tensorboard"] if training.tensorboard else [],
        include_num_input_tokens_seen="all",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,  # RunLogger draws the bar with tokens and tokens/s
        # every parameter takes part in every forward pass: no extra graph traversal per step (and no warning)
        ddp_find_unused_parameters=False,
    )


def training_arguments(recipe: Recipe) -> TrainingArguments:
    """The TrainingArguments a pretraining run hands its callbacks (they read output_dir, save_steps, ...)."""
    return TrainingArguments(
        **shared_training_kwargs(recipe),
        per_device_train_batch_size=1,  # the stream yields whole micro-batches
        ignore_data_skip=True,  # the data stream restores its own position
        average_tokens_across_devices=True,
    )


__all__ = ["shared_training_kwargs", "training_arguments"]
