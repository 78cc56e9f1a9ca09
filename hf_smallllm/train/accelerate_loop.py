"""Pretraining with a plain Accelerate loop, for users who want every line of the step in view.

It trains exactly what the Trainer entry point trains (same recipe, data stream, optimizer, lr schedule, loss
normalisation, checkpoints and callbacks) and writes the same checkpoint layout, so a run can be resumed by either.
One optimizer step: fetch `gradient_accumulation_steps` micro-batches, count the target tokens of all of them
across all processes, give each micro-batch's loss as sum / that count (times the number of processes, since DDP
averages gradients), accumulate gradients without synchronising until the last micro-batch, clip, step.
Callbacks are `transformers.TrainerCallback`s driven through transformers' `CallbackHandler`, so the sections
that plug into Trainer runs (publishing, domain evaluation) work here unchanged.
"""

import os
import pickle
import random
from contextlib import nullcontext

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from transformers.trainer_callback import (
    CallbackHandler,
    DefaultFlowCallback,
    ExportableState,
    TrainerControl,
    TrainerState,
)

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
from .stability import build_stability, drop_gradients
from .trainer_entry import training_arguments

OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.random.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.random.set_rng_state_all(state["cuda"])


def load_state(path: str):
    """A resume-only file (optimizer, scheduler, RNG state) unpickled with `weights_only=True`: tensors, numbers,
    strings and containers, plus the numpy array types an RNG state holds (transformers' `safe_globals`, so the
    Trainer entry's files load too). A checkpoint folder may come from elsewhere; a pickle that would run code is
    refused with a RecipeError naming the file."""
    from transformers.trainer_pt_utils import safe_globals

    try:
        with safe_globals():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise RecipeError(f"{path}: refusing to unpickle it with weights_only=True (it holds objects other than "
                          f"tensors, numbers and containers): {str(err).splitlines()[0]}") from None


class AccelerateTrainer:
    """The loop; `train()` runs it. Attributes mirror Trainer's (`model`, `state`, `args`) for callbacks."""

    def __init__(self, recipe: Recipe, model, tokenizer, callbacks: list):
        training = recipe.training
        if training.precision == "fp16" and not torch.cuda.is_available():
            raise RecipeError("training.precision: fp16 needs a GPU; use bf16 or fp32 on CPU")
        self.recipe = recipe
        self.args = training_arguments(recipe)  # what callbacks read (output_dir, save_steps, ...)
        # Accumulation is done by hand below (the loss is already normalised by the step's target count, so
        # accelerate must not divide it by the number of micro-batches again).
        self.accelerator = Accelerator(
            mixed_precision={"fp32": "no"}.get(training.precision, training.precision),
            cpu=not torch.cuda.is_available(),
        )
        torch.manual_seed(training.seed)
        self.tokenizer = tokenizer
        self.stream = build_stream(recipe, tokenizer, world_size=self.accelerator.num_processes,
                                   rank=self.accelerator.process_index)
        # the embedding-gradient shrink hook goes on the model; the spike skipper is consulted before each update
        self.spike_skipper = build_stability(recipe, model, is_main_process=self.accelerator.is_main_process)
        if self.spike_skipper is not None and self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            raise RecipeError("stability.skip_loss_spikes does not work under DeepSpeed (its engine owns the "
                              "gradients); use DDP or FSDP, or turn it off")
        self.optimizer = build_optimizer(model, recipe.optimizer)
        # The scheduler is stepped by hand once per optimizer step: accelerate's wrapper would step it once per
        # process.
        self.lr_scheduler = build_lr_scheduler(self.optimizer, recipe.schedule, training.max_steps)
        self.model, self.optimizer = self.accelerator.prepare(model, self.optimizer)
        self.state = TrainerState(max_steps=training.max_steps, logging_steps=training.logging_steps,
                                  save_steps=training.save_steps,
                                  is_local_process_zero=self.accelerator.is_local_main_process,
                                  is_world_process_zero=self.accelerator.is_main_process)
        self.control = TrainerControl()
        extra = [self.spike_skipper] if self.spike_skipper is not None else []  # it restores its window on resume
        self._loss_window = (0.0, 0)  # (sum of step losses since the last log, steps in it)
        self.callback_handler = CallbackHandler([DefaultFlowCallback] + list(callbacks) + extra, self.unwrapped_model,
                                                tokenizer, self.optimizer, self.lr_scheduler)

    @property
    def unwrapped_model(self):
        return self.accelerator.unwrap_model(self.model)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        step = self.state.global_step
        accelerator = self.accelerator
        data_state = self.stream.state_dict()
        folder = temporary_checkpoint_dir(self.args.output_dir, step)
        context = atomic_checkpoint(self.args.output_dir, step) if accelerator.is_main_process else nullcontext(folder)
        with context as staging:
            accelerator.wait_for_everyone()
            staging = str(staging)
            if accelerator.is_main_process:
                self.unwrapped_model.save_pretrained(staging, state_dict=accelerator.get_state_dict(self.model))
                if self.tokenizer is not None:
                    self.tokenizer.save_pretrained(staging)
                torch.save(self.optimizer.state_dict(), os.path.join(staging, OPTIMIZER_NAME))
                torch.save(self.lr_scheduler.state_dict(), os.path.join(staging, SCHEDULER_NAME))
                write_json_atomic(os.path.join(staging, DATA_STATE_NAME), data_state, sort_keys=True)
                loss_sum, logged_steps = self._loss_window
                write_json_atomic(os.path.join(staging, LOSS_WINDOW_NAME),
                                  {"loss_sum": loss_sum, "last_logged_step": step - logged_steps})
            rng_name = (f"rng_state_{accelerator.process_index}.pth" if accelerator.num_processes > 1
                        else "rng_state.pth")
            torch.save(_rng_state(), os.path.join(staging, rng_name))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                for callback in self.callback_handler.callbacks:  # what Trainer stores for stateful callbacks
                    if isinstance(callback, ExportableState):
                        self.state.stateful_callbacks[type(callback).__name__] = callback.state()
                self.state.save_to_json(os.path.join(staging, TRAINER_STATE_NAME))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            rotate_checkpoints(self.args.output_dir, self.recipe.training.save_total_limit)
        self.control = self.callback_handler.on_save(self.args, self.state, self.control)

    def load_checkpoint(self, folder) -> None:
        from safetensors.torch import load_file

        folder = str(folder)
        weights = os.path.join(folder, "model.safetensors")
        if os.path.exists(weights):
            state_dict = load_file(weights)
        else:  # sharded
            import json

            index = json.load(open(os.path.join(folder, "model.safetensors.index.json")))
            state_dict = {}
            for shard in sorted(set(index["weight_map"].values())):
                state_dict.update(load_file(os.path.join(folder, shard)))
        missing, unexpected = self.unwrapped_model.load_state_dict(state_dict, strict=False)
        tied = self.unwrapped_model.config.tie_word_embeddings
        missing = [k for k in missing if not (tied and k == "lm_head.weight")]
        if missing or unexpected:
            raise RecipeError(f"{folder}: checkpoint does not match the model (missing {missing}, "
                              f"unexpected {unexpected})")
        self.optimizer.load_state_dict(load_state(os.path.join(folder, OPTIMIZER_NAME)))
        self.lr_scheduler.load_state_dict(load_state(os.path.join(folder, SCHEDULER_NAME)))
        rng_name = (f"rng_state_{self.accelerator.process_index}.pth" if self.accelerator.num_processes > 1
                    else "rng_state.pth")
        rng_path = os.path.join(folder, rng_name)
        if os.path.exists(rng_path):
            _set_rng_state(load_state(rng_path))
        self.state = TrainerState.load_from_json(os.path.join(folder, TRAINER_STATE_NAME))
        self.state.is_local_process_zero = self.accelerator.is_local_main_process
        self.state.is_world_process_zero = self.accelerator.is_main_process
        data_state = read_data_state(folder)
        if data_state is None:
            raise RecipeError(f"{folder} has no {DATA_STATE_NAME}; it was not written by this pipeline")
        self.stream.load_state_dict(data_state)
        window = read_loss_window(folder)
        if window is not None:
            self._loss_window = (window[0], self.state.global_step - window[1])

    # ------------------------------------------------------------------ training
    def _count_targets(self, micro_batches) -> torch.Tensor:
        local = sum(int((batch["labels"][:, 1:] != -100).sum()) for batch in micro_batches)
        total = torch.tensor(local, device=self.accelerator.device)
        return self.accelerator.reduce(total, reduction="sum")

    def train(self, resume_from=None):
        accelerator, training = self.accelerator, self.recipe.training
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        model = self.model
        model.train()
        self.control = self.callback_handler.on_train_begin(self.args, self.state, self.control)
        batches = iter(self.stream)
        logged_loss, logged_steps = self._loss_window  # the averaging window open at the resumed checkpoint
        while self.state.global_step < training.max_steps:
            self.control = self.callback_handler.on_step_begin(self.args, self.state, self.control)
            micro_batches = [next(batches) for _ in range(training.gradient_accumulation_steps)]
            num_items = self._count_targets(micro_batches)
            step_loss = torch.zeros((), device=accelerator.device)
            for index, batch in enumerate(micro_batches):
                batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                last = index == len(micro_batches) - 1
                sync = nullcontext() if last or accelerator.num_processes == 1 else accelerator.no_sync(model)
                with sync, accelerator.autocast():
                    loss = model(**batch, num_items_in_batch=num_items, use_cache=False).loss
                    # DDP averages gradients over processes; the loss is already normalised by the global count
                    accelerator.backward(loss * accelerator.num_processes)
                step_loss += loss.detach()
                self.state.num_input_tokens_seen += int(batch["input_ids"].numel()) * accelerator.num_processes
            grad_norm = None
            if self.recipe.optimizer.max_grad_norm:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), self.recipe.optimizer.max_grad_norm)
            step_lr = self.lr_scheduler.get_last_lr()[0]  # the lr this update used (what Trainer logs)
            global_loss = float(accelerator.reduce(step_loss, reduction="sum"))
            if self.spike_skipper is not None and self.spike_skipper.check(global_loss, self.state.global_step + 1):
                drop_gradients(model)  # the step still runs (fp16's scaler needs it) but updates nothing
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.state.global_step += 1
            self.state.epoch = self.state.global_step / training.max_steps
            logged_loss += global_loss
            logged_steps += 1
            self._loss_window = (logged_loss, logged_steps)
            self.control = self.callback_handler.on_step_end(self.args, self.state, self.control)
            if self.control.should_log:
                logs = {"loss": logged_loss / logged_steps, "learning_rate": step_lr}
                if grad_norm is not None:
                    logs["grad_norm"] = float(grad_norm)
                logs["num_input_tokens_seen"] = self.state.num_input_tokens_seen
                self.state.log_history.append({**logs, "step": self.state.global_step})
                self.control = self.callback_handler.on_log(self.args, self.state, self.control, logs)
                logged_loss, logged_steps = 0.0, 0
                self._loss_window = (logged_loss, logged_steps)
                self.control.should_log = False
            if self.control.should_save:
                self.save_checkpoint()
                self.control.should_save = False
            if self.control.should_training_stop:
                break
        self.control = self.callback_handler.on_train_end(self.args, self.state, self.control)
        accelerator.wait_for_everyone()
        return self.state


def train_with_accelerate(recipe: Recipe, model, tokenizer, callbacks: list, resume_from=None) -> AccelerateTrainer:
    trainer = AccelerateTrainer(recipe, model, tokenizer, callbacks)
    trainer.train(resume_from)
    return trainer


__all__ = ["AccelerateTrainer", "train_with_accelerate"]
