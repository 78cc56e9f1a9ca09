"""Pretraining with `transformers.Trainer` (runs under `accelerate launch` / `torchrun` unchanged).

`PretrainTrainer` adds to Trainer what pretraining needs: the resumable packed data stream as its dataloader
(micro-batches whose size follows the sequence-length schedule), the recipe's optimizer (weight-decay groups or
muP groups) and lr schedule, and atomic checkpoints that also record the data stream's position, so `--resume`
continues with exactly the next batch.
"""

import os

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import ExportableState, PrinterCallback, ProgressCallback

from ..runfiles import (
    DATA_STATE_NAME,
    LOSS_WINDOW_NAME,
    TRAINER_STATE_NAME,
    read_data_state,
    read_loss_window,
    temporary_checkpoint_dir,
    write_json_atomic,
)
from .build import build_stream
from .checkpoint import atomic_checkpoint, rotate_checkpoints
from .lr_schedules import build_lr_scheduler
from .optim import build_optimizer
from .recipe import Recipe, RecipeError
from .stability import build_stability


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
    )


def training_arguments(recipe: Recipe) -> TrainingArguments:
    return TrainingArguments(
        **shared_training_kwargs(recipe),
        per_device_train_batch_size=1,  # the stream yields whole micro-batches
        ignore_data_skip=True,  # the data stream restores its own position
        average_tokens_across_devices=True,
    )


class RecipeTrainer(Trainer):
    """Trainer driven by a recipe: its optimizer (weight-decay groups or muP groups) and lr schedule, no printer or
    stock progress callbacks (RunLogger draws the bar), and atomic checkpoints: everything is written into
    `.tmp-checkpoint-<step>` and renamed to `checkpoint-<step>` only when complete. Subclasses add files to a
    checkpoint through `write_extra_checkpoint_files`."""

    def __init__(self, *args, recipe, **kwargs):
        super().__init__(*args, **kwargs)
        self.recipe = recipe
        self.remove_callback(PrinterCallback)
        self.remove_callback(ProgressCallback)
        self._tr_loss = None  # Trainer's running loss sum since the last log (a tensor it resets in place)
        self.resumed_loss_window: tuple[float, int] | None = None  # (loss sum, last logged step) to restore

    def _maybe_log_save_evaluate(self, tr_loss, *args, **kwargs):
        # Trainer restarts its loss-averaging window at a resume; put back the window open at the checkpoint so the
        # first log after it averages the same steps as an uninterrupted run.
        self._tr_loss = tr_loss
        if self.resumed_loss_window is not None:
            loss_sum, last_logged = self.resumed_loss_window
            self.resumed_loss_window = None
            with torch.no_grad():
                tr_loss += loss_sum
            self._globalstep_last_logged = last_logged
        return super()._maybe_log_save_evaluate(tr_loss, *args, **kwargs)

    def _loss_window(self) -> dict:
        """The open averaging window, gathered over processes as Trainer's log does (a collective: every rank)."""
        from transformers.trainer_pt_utils import nested_gather

        loss_sum = 0.0 if self._tr_loss is None else float(
            nested_gather(self._tr_loss, self.args.parallel_mode).mean().item())
        return {"loss_sum": loss_sum, "last_logged_step": self._globalstep_last_logged}

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = build_optimizer(model if model is not None else self.model, self.recipe.optimizer)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = build_lr_scheduler(optimizer or self.optimizer, self.recipe.schedule,
                                                   num_training_steps)
        return self.lr_scheduler

    def checkpoint_extras(self) -> dict:
        """What a subclass needs at save time, captured before anything is written (e.g. the data position)."""
        return {}

    def write_extra_checkpoint_files(self, folder: str, extras: dict) -> None:
        """Called on the main process inside the staging folder, before trainer_state.json is written."""

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = self._get_output_dir(trial=trial)
        step = self.state.global_step
        extras = {**self.checkpoint_extras(), "loss_window": self._loss_window()}
        if self.args.should_save:
            with atomic_checkpoint(run_dir, step) as staging:
                self._write_checkpoint(str(staging), extras)
            rotate_checkpoints(run_dir, self.args.save_total_limit)
        else:
            self._write_checkpoint(str(temporary_checkpoint_dir(run_dir, step)), extras)

    def _write_checkpoint(self, folder: str, extras: dict) -> None:
        self._barrier()  # the staging folder exists before other processes write their RNG state
        self.save_model(folder, _internal_call=True)
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(folder)
            self._save_scaler(folder)
            self._save_rng_state(folder)
        if self.args.should_save:
            for callback in self.callback_handler.callbacks + [self.control]:
                if isinstance(callback, ExportableState):
                    name = callback.__class__.__name__
                    if isinstance(self.state.stateful_callbacks.get(name), list):
                        self.state.stateful_callbacks[name].append(callback.state())
                    else:
                        self.state.stateful_callbacks[name] = callback.state()
            self.write_extra_checkpoint_files(folder, extras)
            write_json_atomic(os.path.join(folder, LOSS_WINDOW_NAME), extras["loss_window"])
            self.state.save_to_json(os.path.join(folder, TRAINER_STATE_NAME))
        self._barrier()  # everyone has written before the main process renames the folder

    def _barrier(self) -> None:
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()


class PretrainTrainer(RecipeTrainer):
    """Pretraining: the resumable packed data stream as the dataloader (micro-batches whose size follows the
    sequence-length schedule), the stream's position saved in every checkpoint (`data_state.json`), and the
    recipe's loss-spike skipping (`stability.py`): every micro-batch loss goes to the skipper, which decides before
    the optimizer step."""

    def __init__(self, *args, recipe: Recipe, stream, spike_skipper=None, **kwargs):
        super().__init__(*args, recipe=recipe, **kwargs)
        self.stream = stream
        self.spike_skipper = spike_skipper
        if spike_skipper is not None:
            if self.is_deepspeed_enabled:
                raise RecipeError("stability.skip_loss_spikes does not work under DeepSpeed (its engine owns the "
                                  "gradients); use DDP or FSDP, or turn it off")
            self.add_callback(spike_skipper)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.spike_skipper is not None:
            self.spike_skipper.add(loss)
        return loss

    def get_train_dataloader(self) -> DataLoader:
        # The stream already yields this process's micro-batches; accelerate must not shard or re-batch it.
        return DataLoader(self.stream, batch_size=None, num_workers=0)

    def checkpoint_extras(self) -> dict:
        return {"data_state": self.stream.state_dict()}

    def write_extra_checkpoint_files(self, folder: str, extras: dict) -> None:
        write_json_atomic(os.path.join(folder, DATA_STATE_NAME), extras["data_state"], sort_keys=True)


def train_with_trainer(recipe: Recipe, model, tokenizer, callbacks: list, resume_from=None) -> PretrainTrainer:
    args = training_arguments(recipe)
    stream = build_stream(recipe, tokenizer, world_size=args.world_size, rank=args.process_index)
    if resume_from is not None:
        state = read_data_state(resume_from)
        if state is None:
            raise RecipeError(f"{resume_from} has no {DATA_STATE_NAME}; it was not written by this pipeline")
        stream.load_state_dict(state)
    spike_skipper = build_stability(recipe, model, is_main_process=args.process_index == 0)
    trainer = PretrainTrainer(model=model, args=args, processing_class=tokenizer, callbacks=callbacks, recipe=recipe,
                              stream=stream, spike_skipper=spike_skipper)
    if resume_from is not None:
        trainer.resumed_loss_window = read_loss_window(resume_from)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    return trainer


__all__ = ["PretrainTrainer", "RecipeTrainer", "shared_training_kwargs", "train_with_trainer", "training_arguments"]
