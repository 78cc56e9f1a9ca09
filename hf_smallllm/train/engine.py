"""The pretraining engine: one loop for one process, DDP, FSDP2 and DeepSpeed ZeRO 1-3, every line of the step in
view. `build_run` (run.py) builds what it trains; the `Checkpointer` (checkpointer.py) writes and reads its state.

One optimizer step: fetch `gradient_accumulation_steps` micro-batches, count the target tokens of all of them across
all processes, give each micro-batch's loss as sum / that count (times the number of processes, since DDP, FSDP2 and
DeepSpeed average gradients over processes; times the accumulation count under DeepSpeed, whose engine divides by
it), synchronise gradients on the last micro-batch only, clip, step. With `training.context_parallel` (of the step's
stage: `run.attention.use` switches the model's attention where it changes), each micro-batch is first cut to this
rank's slice of every row (`context_parallel.shard_batch`), and targets are counted on the slices. Callbacks are
`transformers.TrainerCallback`s driven through transformers' `CallbackHandler`, so recipe sections (publishing,
domain evaluation) and TensorBoard plug in as they would into a Trainer.

Why there is no Trainer entry any more: Trainer's checkpoints could only be made sharded, resumable on another
world size and complete (`save_pretrained` folders under FSDP) by overriding its private saving methods, and its
loop had to be bent to take the packed stream, the recipe's loss normalisation and the spike skipper. Everything
users took from it (TrainerCallbacks, TrainerState, TensorBoard, `accelerate launch` configs) works here through
public APIs; docs/pretraining.md says more.
"""

from __future__ import annotations

from contextlib import ExitStack, nullcontext

import torch
from transformers.trainer_callback import (
    CallbackHandler,
    DefaultFlowCallback,
    ExportableState,
    TrainerControl,
    TrainerState,
)

from .context_parallel import count_targets, shard_batch
from .run import Run
from .stability import drop_gradients


def _as_float(value) -> float:
    from torch.distributed.tensor import DTensor

    if isinstance(value, DTensor):
        value = value.full_tensor()
    return float(value)


class TrainingEngine:
    """Runs the steps of a built `Run`; `train()` returns transformers' TrainerState. Attributes mirror Trainer's
    (`model`, `state`, `args`) for callbacks."""

    def __init__(self, run: Run):
        self.run = run
        self.recipe = run.recipe
        self.accelerator = run.accelerator
        self.model = run.model
        self.args = run.args
        training = run.recipe.training
        self.state = TrainerState(max_steps=training.max_steps, logging_steps=training.logging_steps,
                                  save_steps=training.save_steps,
                                  is_local_process_zero=self.accelerator.is_local_main_process,
                                  is_world_process_zero=self.accelerator.is_main_process)
        self.control = TrainerControl()
        extra = [run.spike_skipper] if run.spike_skipper is not None else []  # it restores its window on resume
        self._loss_window = (0.0, 0)  # (sum of step losses since the last log, steps in it)
        self.callback_handler = CallbackHandler([DefaultFlowCallback] + list(run.callbacks) + extra, run.unwrapped,
                                                run.tokenizer, run.optimizer, run.lr_scheduler)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        for callback in self.callback_handler.callbacks:  # what Trainer stores for stateful callbacks
            if isinstance(callback, ExportableState):
                self.state.stateful_callbacks[type(callback).__name__] = callback.state()
        loss_sum, logged_steps = self._loss_window
        self.run.checkpointer.save(self.state, self.run.stream.state_dict(),
                                   {"loss_sum": loss_sum, "last_logged_step": self.state.global_step - logged_steps})
        self.control = self.callback_handler.on_save(self.args, self.state, self.control)

    def load_checkpoint(self, folder) -> None:
        resumed = self.run.checkpointer.load(folder)
        self.state = resumed.trainer_state
        self.state.is_local_process_zero = self.accelerator.is_local_main_process
        self.state.is_world_process_zero = self.accelerator.is_main_process
        self.run.stream.load_state_dict(resumed.data_state)
        if resumed.loss_window is not None:
            loss_sum, last_logged = resumed.loss_window
            self._loss_window = (loss_sum, self.state.global_step - last_logged)

    # ------------------------------------------------------------------ one step
    def _count_targets(self, micro_batches) -> torch.Tensor:
        # of a context-parallel slice: its own; the slices of a group add up to their rows' count, and the groups
        # read distinct rows, so the sum over all processes counts every target of the global batch once
        local = sum(count_targets(batch) for batch in micro_batches)
        total = torch.tensor(local, device=self.accelerator.device)
        return self.accelerator.reduce(total, reduction="sum")

    def _sync_context(self, last: bool):
        """Gradients are reduced over processes on the last micro-batch of a step only."""
        plan, accelerator, model = self.run.plan, self.accelerator, self.model
        if plan.zero_stage is not None:
            return accelerator.accumulate(model)  # the engine steps at the accumulation boundary
        if plan.parallelism == "fsdp2":
            model.set_requires_gradient_sync(last)
            return nullcontext()
        if last or accelerator.num_processes == 1:
            return nullcontext()
        return accelerator.no_sync(model)

    def _loss_scale(self) -> int:
        scale = self.accelerator.num_processes  # gradients are averaged over processes; the loss is a global mean
        if self.run.plan.zero_stage is not None:
            scale *= self.recipe.training.gradient_accumulation_steps  # DeepSpeed's backward divides by it
        return scale

    def _clip(self):
        max_norm = self.recipe.optimizer.max_grad_norm
        if self.run.plan.zero_stage is not None:  # DeepSpeed clips inside its step (gradient_clipping)
            norm = getattr(self.model, "get_global_grad_norm", lambda: None)()
            return None if norm is None else float(norm)
        if not max_norm:
            return None
        if self.run.plan.sharded_by == "hf_smallllm":
            return _as_float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        return _as_float(self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm))

    def train(self, resume_from=None) -> TrainerState:
        accelerator, training, run = self.accelerator, self.recipe.training, self.run
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        model = self.model
        model.train()
        self.control = self.callback_handler.on_train_begin(self.args, self.state, self.control)
        batches = iter(run.stream)
        logged_loss, logged_steps = self._loss_window  # the averaging window open at the resumed checkpoint
        scale = self._loss_scale()
        while self.state.global_step < training.max_steps:
            self.control = self.callback_handler.on_step_begin(self.args, self.state, self.control)
            # a stage may change the accumulation count (its batch size): the stream knows each step's
            micro_batches = [next(batches) for _ in range(run.stream.accumulation_at(self.state.global_step))]
            context = run.stream.ranks_per_row_at(self.state.global_step)  # the stage's context-parallel size
            run.attention.use(context)
            if context > 1:  # this rank's slice of every row (train/context_parallel.py)
                rank = accelerator.process_index
                micro_batches = [shard_batch(batch, rank % context, context) for batch in micro_batches]
            num_items = self._count_targets(micro_batches)
            step_loss = torch.zeros((), device=accelerator.device)
            for index, batch in enumerate(micro_batches):
                batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                with ExitStack() as stack:
                    stack.enter_context(self._sync_context(index == len(micro_batches) - 1))
                    stack.enter_context(accelerator.autocast())
                    loss = model(**batch, num_items_in_batch=num_items, use_cache=False).loss
                    accelerator.backward(loss * scale)
                step_loss += loss.detach()
                self.state.num_input_tokens_seen += int(batch["input_ids"].numel()) * accelerator.num_processes
            grad_norm = self._clip()
            step_lr = run.lr_scheduler.get_last_lr()[0]  # the lr this update used (what Trainer logs)
            global_loss = float(accelerator.reduce(step_loss, reduction="sum"))
            if run.spike_skipper is not None and run.spike_skipper.check(global_loss, self.state.global_step + 1):
                drop_gradients(model)  # the step still runs (fp16's scaler needs it) but updates nothing
            run.optimizer.step()  # a no-op under DeepSpeed: its engine stepped in backward
            run.lr_scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
            self.state.global_step += 1
            self.state.epoch = self.state.global_step / training.max_steps
            logged_loss += global_loss
            logged_steps += 1
            self._loss_window = (logged_loss, logged_steps)
            self.control = self.callback_handler.on_step_end(self.args, self.state, self.control)
            if self.control.should_log:
                logs = {"loss": logged_loss / logged_steps, "learning_rate": step_lr}
                if grad_norm is not None:
                    logs["grad_norm"] = grad_norm
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
        run.attention.use(1)  # the model's own attention again for whoever uses it after the run
        self.control = self.callback_handler.on_train_end(self.args, self.state, self.control)
        accelerator.wait_for_everyone()
        return self.state


def train(run: Run) -> TrainingEngine:
    """Train a built run to its last step (resuming from `run.resume_from`); returns the engine."""
    engine = TrainingEngine(run)
    engine.train(run.resume_from)
    return engine


__all__ = ["TrainingEngine", "train"]
