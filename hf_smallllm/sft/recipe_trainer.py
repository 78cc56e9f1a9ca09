"""`RecipeTrainer`: transformers' Trainer driven by a recipe, the base of the SFT and DPO trainers (mixed in before
TRL's): the recipe's optimizer and lr schedule, the package's progress bar instead of Trainer's, atomic checkpoints,
and a loss-averaging window that survives a resume. (Pretraining does not use Trainer: see
`hf_smallllm.train.engine`.)
"""

import os

import torch
from transformers import Trainer
from transformers.trainer_callback import ExportableState, PrinterCallback, ProgressCallback

from ..runfiles import TRAINER_STATE_NAME, temporary_checkpoint_dir, write_json_atomic
from ..train.checkpointer import LOSS_WINDOW_NAME, atomic_checkpoint, rotate_checkpoints
from ..train.lr_schedules import build_lr_scheduler
from ..train.optim import build_optimizer


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


__all__ = ["RecipeTrainer"]
