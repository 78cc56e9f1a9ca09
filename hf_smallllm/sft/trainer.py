"""Instruction fine-tuning with `transformers.Trainer` (runs under `accelerate launch` / `torchrun` unchanged).

`SFTTrainer` is the pretraining entry's `RecipeTrainer`: the recipe's optimizer (AdamW without decay on norms/biases, over the trainable
parameters only, so LoRA/QLoRA optimise just the adapters) and lr schedule, and the run conventions shared with
pretraining: checkpoints are written into a temporary folder and renamed when complete
(`hf_smallllm.train.checkpoint`), one is always written at the last step, and metrics go to `metrics.jsonl`.
Resuming restores weights (or the adapter), optimizer, scheduler, RNG and the data position (Trainer skips the
batches it already consumed in the current epoch; the sampler is seeded).
"""

from transformers import TrainerCallback, TrainingArguments

from ..train.trainer_entry import RecipeTrainer, shared_training_kwargs


def sft_training_arguments(recipe, has_eval: bool) -> TrainingArguments:
    training = recipe.training
    return TrainingArguments(
        **shared_training_kwargs(recipe),
        num_train_epochs=training.num_epochs,
        per_device_train_batch_size=training.per_device_batch_size,
        per_device_eval_batch_size=training.per_device_batch_size,
        eval_strategy="steps" if has_eval and training.eval_steps else "no",
        eval_steps=training.eval_steps if has_eval else None,
        label_names=["labels"],
    )


class SaveAtEnd(TrainerCallback):
    """A checkpoint at the last step too, whatever save_steps is."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = True


class SFTTrainer(RecipeTrainer):
    """The recipe trainer with a checkpoint at the last step too."""

    def __init__(self, *args, recipe, **kwargs):
        super().__init__(*args, recipe=recipe, **kwargs)
        self.add_callback(SaveAtEnd())


__all__ = ["SFTTrainer", "SaveAtEnd", "sft_training_arguments"]
