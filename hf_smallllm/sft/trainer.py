"""Instruction fine-tuning with `transformers.Trainer` (runs under `accelerate launch` / `torchrun` unchanged).

`SFTTrainer` adds to Trainer the recipe's optimizer (AdamW without decay on norms/biases, over the trainable
parameters only, so LoRA/QLoRA optimise just the adapters) and lr schedule, and the run conventions shared with
pretraining: checkpoints are written into a temporary folder and renamed when complete
(`hf_smallllm.train.checkpoint`), one is always written at the last step, and metrics go to `metrics.jsonl`.
Resuming restores weights (or the adapter), optimizer, scheduler, RNG and the data position (Trainer skips the
batches it already consumed in the current epoch; the sampler is seeded).
"""

import os

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ExportableState, PrinterCallback, ProgressCallback

from ..train.checkpoint import TRAINER_STATE_NAME, atomic_checkpoint, rotate_checkpoints
from ..train.lr_schedules import build_lr_scheduler
from ..train.optim import build_optimizer
from ..train.trainer_entry import shared_training_kwargs


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


class SFTTrainer(Trainer):
    def __init__(self, *args, recipe, **kwargs):
        super().__init__(*args, **kwargs)
        self.recipe = recipe
        self.remove_callback(PrinterCallback)
        self.remove_callback(ProgressCallback)
        self.add_callback(SaveAtEnd())

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = build_optimizer(model if model is not None else self.model, self.recipe.optimizer)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = build_lr_scheduler(optimizer or self.optimizer, self.recipe.schedule,
                                                   num_training_steps)
        return self.lr_scheduler

    def _save_checkpoint(self, model, trial) -> None:
        """Trainer's checkpoint (full model or adapter, tokenizer, optimizer, scheduler, RNG, trainer state), written
        into a temporary folder that becomes `checkpoint-<step>` only when complete."""
        run_dir = self._get_output_dir(trial=trial)
        step = self.state.global_step
        if self.args.should_save:
            with atomic_checkpoint(run_dir, step) as staging:
                self._write_checkpoint(str(staging))
            rotate_checkpoints(run_dir, self.args.save_total_limit)
        else:
            self._write_checkpoint(os.path.join(run_dir, f".tmp-checkpoint-{step}"))

    def _write_checkpoint(self, folder: str) -> None:
        self._barrier()
        self.save_model(folder, _internal_call=True)
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(folder)
            self._save_scaler(folder)
            self._save_rng_state(folder)
        if self.args.should_save:
            for callback in self.callback_handler.callbacks + [self.control]:
                if isinstance(callback, ExportableState):
                    self.state.stateful_callbacks[callback.__class__.__name__] = callback.state()
            self.state.save_to_json(os.path.join(folder, TRAINER_STATE_NAME))
        self._barrier()

    def _barrier(self) -> None:
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()


__all__ = ["SFTTrainer", "SaveAtEnd", "sft_training_arguments"]
