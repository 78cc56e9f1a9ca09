"""`build_run`: everything a pretraining run needs, built once from a recipe, in the order that sharding requires.

1. The `Accelerator` (it starts the process group under torchrun / accelerate launch).
2. The shared-storage check (`parallel.check_shared_storage`), then the checkpoint to resume from: every rank must
   see the same run folder before any of them decides anything from it.
3. Seed, tokenizer, model (`build.build_model`), data stream of this rank (`build.build_stream`; the ranks of a
   stage's context-parallel group read the same rows), the stability hooks.
4. The parallel plan (`parallel.plan_parallelism`): what was asked for, what is in effect, or a one-line refusal;
   the attention of every stage's context-parallel size (`context_parallel.StageAttention`), checked and grouped.
5. Sharding and wrapping: FSDP2 on CPU processes by `fsdp.apply_fsdp2` (accelerate cannot shard there), otherwise
   `accelerator.prepare` (DDP, accelerate's FSDP2 plugin, or the DeepSpeed engine). The optimizer is built on the
   parameters as they will be trained (after our own sharding; before accelerate's, which swaps them in place).
6. Callbacks (progress and metrics, recipe sections such as publishing, TensorBoard) and the `Checkpointer`.

The engine (`engine.py`) then only runs steps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..runfiles import METRICS_NAME, RECIPE_NAME, truncate_metrics, write_text_atomic
from .build import build_callbacks, build_model, build_stream, load_tokenizer
from .callbacks import RunLogger
from .checkpointer import Checkpointer, checkpoint_global_step, deepspeed_world_size_changes, resolve_resume
from .parallel import (
    ParallelPlan,
    check_shared_storage,
    check_stage_context_parallel,
    env_flag,
    plan_parallelism,
    write_run_info,
)
from .recipe import Recipe, RecipeError

logger = logging.getLogger(__name__)


@dataclass
class Run:
    recipe: Recipe
    accelerator: object
    plan: ParallelPlan
    model: torch.nn.Module  # what the step calls: a DDP wrapper, an FSDP2 module or a DeepSpeed engine
    unwrapped: torch.nn.Module  # the PreTrainedModel inside it
    tokenizer: object
    stream: object
    optimizer: object
    lr_scheduler: object
    checkpointer: Checkpointer
    lock: object  # runfiles.FolderLock on output_dir, held by rank 0 for the run's lifetime (None on other ranks)
    args: object  # transformers.TrainingArguments: what TrainerCallbacks read (output_dir, save_steps, ...)
    callbacks: list = field(default_factory=list)
    spike_skipper: object = None
    resume_from: Path | None = None
    attention: object = None  # context_parallel.StageAttention: the engine sets each step's context-parallel size

    @property
    def output_dir(self) -> Path:
        return Path(self.recipe.training.output_dir)


def make_accelerator(recipe: Recipe):
    from accelerate import Accelerator

    training = recipe.training
    if training.precision == "fp16" and not torch.cuda.is_available():
        raise RecipeError("training.precision: fp16 needs a GPU; use bf16 or fp32 on CPU")
    # Accumulation is done by hand (each micro-batch loss is already normalised by the step's target count, so
    # accelerate must not divide by the number of micro-batches) except under DeepSpeed, whose engine decides when
    # to step from its own accumulation count.
    precision = {"fp32": "no"}.get(training.precision, training.precision)
    if not env_flag("ACCELERATE_USE_DEEPSPEED"):
        return Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available())
    from accelerate.utils import InitProcessGroupKwargs

    # DeepSpeed runs on CPU processes too (it picks gloo), but accelerate finds no device backend there and would
    # count one process per rank; `cpu=True` would turn DeepSpeed off. Name gloo explicitly on CPU.
    handlers = [] if torch.cuda.is_available() else [InitProcessGroupKwargs(backend="gloo")]
    return Accelerator(mixed_precision=precision, gradient_accumulation_steps=training.gradient_accumulation_steps,
                       kwargs_handlers=handlers)


def _shared_paths(recipe: Recipe) -> list[str]:
    paths = [recipe.tokenizer, recipe.data.prepared, recipe.model.init_from]
    paths += [spec.get("prepared") for spec in recipe.data.sources]
    return [p for p in paths if p and not str(p).startswith(("bundled:", "hf://"))]


def _lock_run_folder(output_dir: Path, is_main: bool):
    """Rank 0 locks the run folder (two runs in one folder would interleave checkpoints and metrics); every rank
    learns the outcome, so all stop with the same line instead of the others waiting for rank 0 forever."""
    import torch.distributed as dist

    from ..runfiles import FolderBusyError, FolderLock

    lock, message = None, None
    if is_main:
        try:
            lock = FolderLock(output_dir, "training")
        except FolderBusyError as err:
            message = str(err)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        shared = [message]
        dist.broadcast_object_list(shared, src=0)
        message = shared[0]
    if message:
        raise RecipeError(message + " (another `pretrain` runs in this training.output_dir)")
    return lock


def build_run(recipe: Recipe, resume: bool | str = False, extra_callbacks: list | None = None) -> Run:
    """Build a run from a loaded recipe (see the module docstring); every process calls it. Rank 0 holds the run
    folder's lock (`Run.lock`) until the caller releases it."""
    from .arguments import training_arguments

    output_dir = Path(recipe.training.output_dir)
    args = training_arguments(recipe)  # before the Accelerator: building TrainingArguments resets accelerate's state
    accelerator = make_accelerator(recipe)
    check_shared_storage(output_dir, _shared_paths(recipe))
    lock = _lock_run_folder(output_dir, accelerator.is_main_process)
    try:
        return _build_locked_run(recipe, resume, extra_callbacks, accelerator, args, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _build_locked_run(recipe: Recipe, resume, extra_callbacks, accelerator, args, lock) -> Run:
    from transformers import set_seed

    from .context_parallel import StageAttention
    from .fsdp import apply_fsdp2
    from .lr_schedules import build_lr_scheduler
    from .optim import build_optimizer
    from .stability import build_stability

    training = recipe.training
    output_dir = Path(training.output_dir)
    resume_from = resolve_resume(output_dir, resume)

    set_seed(training.seed)  # the initial weights depend on it: the same on every rank
    tokenizer = load_tokenizer(recipe)
    model = build_model(recipe, tokenizer)
    check_stage_context_parallel(recipe, accelerator.num_processes)  # a one-line refusal before the stream's own check
    stream = build_stream(recipe, tokenizer, world_size=accelerator.num_processes, rank=accelerator.process_index)
    plan = plan_parallelism(accelerator, recipe, stream.layouts)
    # every stage's size must fit the heads and split its row lengths evenly: a one-line refusal or nothing, and
    # every group created, before sharding
    attention = StageAttention(model, [(layout.ranks_per_row, layout.seq_lens) for layout in stream.layouts])
    if accelerator.is_main_process:
        logger.info("parallelism: %s", plan.describe())
    spike_skipper = build_stability(recipe, model, is_main_process=accelerator.is_main_process)
    if plan.zero_stage is not None and {layout[3] for layout in stream.layouts} != {
            training.gradient_accumulation_steps}:
        # DeepSpeed's engine (and accelerate's accumulate()) hold the one count of training.gradient_accumulation_steps
        raise RecipeError("stages[*].training.gradient_accumulation_steps: DeepSpeed keeps one accumulation count per "
                          "run, training.gradient_accumulation_steps; leave it out of the stages (change "
                          "tokens_per_step per stage instead), or use DDP or FSDP2")
    if spike_skipper is not None and plan.zero_stage is not None:
        raise RecipeError("stability.skip_loss_spikes does not work under DeepSpeed (its engine owns the "
                          "gradients); use DDP or FSDP2, or turn it off")

    if plan.sharded_by == "hf_smallllm":
        apply_fsdp2(model)
    optimizer = build_optimizer(model, recipe.optimizer)
    # stepped by hand once per optimizer step (accelerate's wrapper would step it once per process)
    lr_scheduler = build_lr_scheduler(optimizer, recipe.schedule, training.max_steps, recipe.stage_plans)
    if plan.sharded_by == "hf_smallllm":
        wrapped = model
    else:
        if plan.zero_stage is not None:  # no dataloader goes through prepare: DeepSpeed needs the micro-batch size
            config = accelerator.state.deepspeed_plugin.deepspeed_config
            config["train_micro_batch_size_per_gpu"] = plan.micro_batch_rows[0]
            config["gradient_accumulation_steps"] = training.gradient_accumulation_steps
            config["train_batch_size"] = (plan.micro_batch_rows[0] * training.gradient_accumulation_steps
                                          * plan.world_size)
            # the recipe's clipping, done inside DeepSpeed's step (0 = off)
            config["gradient_clipping"] = float(recipe.optimizer.max_grad_norm or 0.0)
            if resume_from is not None and deepspeed_world_size_changes(resume_from, plan):
                config.setdefault("checkpoint", {})["load_universal"] = True
        wrapped, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(wrapped) if plan.sharded_by != "hf_smallllm" else model

    is_main = accelerator.is_main_process
    callbacks = [RunLogger(output_dir / METRICS_NAME, training.progress_bar, is_main)]
    callbacks += build_callbacks(recipe, unwrapped, tokenizer, is_main)
    if training.tensorboard and is_main:
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback())
    callbacks += list(extra_callbacks or [])

    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is not None:  # the steps after the checkpoint are trained (and logged) again
            truncate_metrics(output_dir / METRICS_NAME, checkpoint_global_step(resume_from))
        import yaml

        write_text_atomic(output_dir / RECIPE_NAME, yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        write_run_info(output_dir, plan, {"resumed_from": str(resume_from) if resume_from else None})
    checkpointer = Checkpointer(accelerator, plan, output_dir, wrapped, unwrapped, optimizer, lr_scheduler,
                                tokenizer, save_total_limit=training.save_total_limit)
    return Run(recipe=recipe, accelerator=accelerator, plan=plan, model=wrapped, unwrapped=unwrapped,
               tokenizer=tokenizer, stream=stream, optimizer=optimizer, lr_scheduler=lr_scheduler,
               checkpointer=checkpointer, lock=lock, args=args, callbacks=callbacks,
               spike_skipper=spike_skipper, resume_from=resume_from, attention=attention)


__all__ = ["Run", "build_run", "make_accelerator"]
