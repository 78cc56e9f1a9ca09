"""The checkpoints of a pretraining run: every file name, save, load, resume and rotation, for one process, DDP,
FSDP2 and DeepSpeed ZeRO 1-3.

A checkpoint `output_dir/checkpoint-<step>/` is a complete `save_pretrained` folder (config, consolidated safetensors
weights, generation config, tokenizer), so any checkpoint loads with `from_pretrained` and publishes as it is, plus:

- `training_state/`: what only resuming needs (publishing skips folders):
  - `optimizer/`: the optimizer state written with `torch.distributed.checkpoint` (DCP). Every rank writes its own
    shard (FSDP2) or the ranks share the writing of replicated state (DDP); DCP records global shapes, so the state
    loads into any number of processes: a run saved on 2 processes resumes on 1 or 4, sharded or not.
  - `deepspeed/`: under DeepSpeed, the engine's own checkpoint (every rank writes its ZeRO partition) instead.
  - `scheduler.pt`, `rng_state_<rank>.pth` (each rank's RNG; ranks without one keep their seeded state),
    `data_state.json` (where the data stream stands, the same for every world size), `loss_window.json` (the
    loss-averaging window open at the checkpoint), `run.json` (the parallel plan the checkpoint was written under).
- `trainer_state.json` (transformers' TrainerState: global step, tokens seen, log history), written last: a
  checkpoint is complete when it exists (`hf_smallllm.runfiles`).

Every rank takes part in a save. Rank 0 creates `.tmp-checkpoint-<step>/`, all ranks write into it (the gather of the
full weights for the safetensors file is a collective too), and rank 0 renames it to `checkpoint-<step>` only when
everything is in, so a run killed mid-save leaves the previous checkpoint as the newest. The model weights are
resumed from the consolidated safetensors (rank 0 reads them and the values are broadcast into each rank's shard).

Resume-only files are read with `weights_only=True`: a checkpoint folder may come from elsewhere.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..runfiles import (
    CHECKPOINT_PREFIX,
    TEMPORARY_PREFIX,
    TRAINER_STATE_NAME,
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    replace_folder,
    temporary_checkpoint_dir,
    write_json_atomic,
)
from .recipe import RecipeError

STATE_DIR = "training_state"
OPTIMIZER_DIR = "optimizer"
DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_TAG = "state"
SCHEDULER_NAME = "scheduler.pt"
DATA_STATE_NAME = "data_state.json"
LOSS_WINDOW_NAME = "loss_window.json"
PLAN_NAME = "run.json"


def rng_state_name(rank: int) -> str:
    return f"rng_state_{rank}.pth"


# --- resume policy ------------------------------------------------------------------------------------------------


def resolve_resume(output_dir, resume) -> Path | None:
    """The checkpoint a run starts from: None for a fresh run (refused when `output_dir` already holds checkpoints,
    so a run is never silently overwritten), the newest complete checkpoint for `resume=True`, or the given path."""
    output_dir = Path(output_dir)
    if not resume:
        if latest_checkpoint(output_dir) is not None:
            raise RecipeError(f"{output_dir} already holds checkpoints; pass --resume to continue, or choose another "
                              "training.output_dir")
        return None
    resume_from = Path(resume) if isinstance(resume, (str, os.PathLike)) else latest_checkpoint(output_dir)
    if resume_from is None or not resume_from.exists():
        raise RecipeError(f"--resume: no complete checkpoint in {output_dir}")
    return resume_from


def checkpoint_global_step(folder) -> int:
    return int(json.loads((Path(folder) / TRAINER_STATE_NAME).read_text(encoding="utf-8"))["global_step"])


def remove_stale_temporaries(output_dir) -> None:
    output_dir = Path(output_dir)
    if output_dir.is_dir():
        for path in output_dir.iterdir():
            if path.name.startswith(TEMPORARY_PREFIX + CHECKPOINT_PREFIX):
                shutil.rmtree(path, ignore_errors=True)


@contextmanager
def atomic_checkpoint(output_dir, step: int):
    """Yields a temporary folder to fill; on success it becomes `checkpoint-<step>` (replacing an older one of the
    same step), on an exception it is removed and nothing changes (the SFT trainers' checkpoints)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output_dir)
    temporary = temporary_checkpoint_dir(output_dir, step)
    temporary.mkdir()
    try:
        yield temporary
        replace_folder(temporary, checkpoint_dir(output_dir, step))
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def rotate_checkpoints(output_dir, keep: int | None) -> None:
    """Delete the oldest checkpoints beyond `keep` (None keeps all)."""
    if keep is None:
        return
    checkpoints = list_checkpoints(output_dir)
    for _, path in checkpoints[: max(0, len(checkpoints) - keep)]:
        shutil.rmtree(path, ignore_errors=True)


# --- safe reading ---------------------------------------------------------------------------------------------------


def load_resume_file(path):
    """A resume-only file (scheduler, RNG state) unpickled with `weights_only=True`: tensors, numbers, strings and
    containers, plus the numpy array types an RNG state holds (transformers' `safe_globals`). A pickle that would run
    code is refused with a RecipeError naming the file."""
    from transformers.trainer_pt_utils import safe_globals

    try:
        with safe_globals():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise RecipeError(f"{path}: refusing to unpickle it with weights_only=True (it holds objects other than "
                          f"tensors, numbers and containers): {str(err).splitlines()[0]}") from None


def read_optimizer_state(checkpoint) -> dict:
    """The optimizer state of a checkpoint as one plain dict (`state` keyed by parameter name, `param_groups`),
    whatever number of processes wrote it: for inspection and tests, not for resuming."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "optimizer.pt"
        dcp_to_torch_save(str(Path(checkpoint) / STATE_DIR / OPTIMIZER_DIR), str(target))
        return torch.load(target, map_location="cpu", weights_only=True)["optimizer"]


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


# --- the checkpointer -----------------------------------------------------------------------------------------------


@dataclass
class ResumeState:
    """What a checkpoint restores beyond model and optimizer: handed back to the engine."""

    trainer_state: object  # transformers.TrainerState
    data_state: dict
    loss_window: tuple[float, int] | None


class Checkpointer:
    """Saves and loads the checkpoints of one run. `model` is what the engine trains (a DDP wrapper, an FSDP2 module
    or a DeepSpeed engine); `unwrapped` the PreTrainedModel inside it."""

    def __init__(self, accelerator, plan, output_dir, model, unwrapped, optimizer, lr_scheduler, tokenizer=None,
                 save_total_limit: int | None = None):
        self.accelerator = accelerator
        self.plan = plan
        self.output_dir = Path(output_dir)
        self.model = model
        self.unwrapped = unwrapped
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.tokenizer = tokenizer
        self.save_total_limit = save_total_limit

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def deepspeed(self) -> bool:
        return self.plan.zero_stage is not None

    def _barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ weights
    def full_state_dict(self, state_dir: Path | None = None) -> dict[str, torch.Tensor]:
        """The consolidated fp32 weights on rank 0 (CPU tensors; other ranks get {}). A collective: every rank calls
        it. Under DeepSpeed they are read back from the ZeRO checkpoint just written in `state_dir` (the fp32 master
        weights, whatever the stage and the module's dtype)."""
        if self.deepspeed:
            if not self.is_main:
                return {}
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            return get_fp32_state_dict_from_zero_checkpoint(str(state_dir / DEEPSPEED_DIR), tag=DEEPSPEED_TAG)
        if self.plan.parallelism == "fsdp2":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            return get_model_state_dict(self.unwrapped,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.is_main:
            return {}
        return {k: v.detach().cpu() for k, v in self.unwrapped.state_dict().items()}

    def _load_weights(self, folder: Path) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        from ..convert.checkpoint_files import CheckpointReader

        sharded = self.plan.parallelism == "fsdp2"
        state = CheckpointReader.open(folder).load_all() if (self.is_main or not sharded) else {}
        if self.unwrapped.config.tie_word_embeddings and state:
            state.pop("lm_head.weight", None)
        expected = set(self.unwrapped.state_dict())
        if self.unwrapped.config.tie_word_embeddings:
            expected.discard("lm_head.weight")
        if state and set(state) != expected:
            raise RecipeError(f"{folder}: checkpoint does not match the model (missing "
                              f"{sorted(expected - set(state))}, unexpected {sorted(set(state) - expected)})")
        if sharded:
            set_model_state_dict(self.unwrapped, state, options=StateDictOptions(
                full_state_dict=True, broadcast_from_rank0=True, strict=False))
        else:
            self.unwrapped.load_state_dict(state, strict=False)

    # ------------------------------------------------------------------ optimizer
    @property
    def _torch_optimizer(self):
        """The torch optimizer (inside accelerate's AcceleratedOptimizer where the run prepared it)."""
        return getattr(self.optimizer, "optimizer", self.optimizer)

    def _optimizer_state(self):
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(self.unwrapped, self._torch_optimizer)

    def _save_optimizer(self, folder: Path) -> None:
        import torch.distributed.checkpoint as dcp

        dcp.save({"optimizer": self._optimizer_state()}, checkpoint_id=str(folder / OPTIMIZER_DIR),
                 no_dist=not _distributed())

    def _load_optimizer(self, folder: Path) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        path = folder / OPTIMIZER_DIR
        if not (path / ".metadata").exists():
            raise RecipeError(f"{folder.parent}: no optimizer state ({OPTIMIZER_DIR}/.metadata); it was not written by "
                              "this version's checkpointer")
        read_dcp_index(path)  # refused here, in one line, before torch reads it (its errors come wrapped per rank)
        state = {"optimizer": self._optimizer_state()}  # initialised in place, then filled from the shards
        dcp.load(state, storage_reader=_SafeReader(path), planner=_safe_load_planner(), no_dist=not _distributed())
        set_optimizer_state_dict(self.unwrapped, self._torch_optimizer, state["optimizer"])

    # ------------------------------------------------------------------ save
    def save(self, trainer_state, data_state: dict, loss_window: dict) -> Path:
        """Write `checkpoint-<step>` (every rank calls this); returns its path."""
        step = trainer_state.global_step
        staging = temporary_checkpoint_dir(self.output_dir, step)
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.output_dir)
            (staging / STATE_DIR).mkdir(parents=True)
        self._barrier()
        try:
            state_dir = staging / STATE_DIR
            if self.deepspeed:  # every rank writes its ZeRO partition; the weights are consolidated from them
                self.model.save_checkpoint(str(state_dir / DEEPSPEED_DIR), tag=DEEPSPEED_TAG, save_latest=False)
                self._barrier()
            else:
                self._save_optimizer(state_dir)
            weights = self.full_state_dict(state_dir)
            if self.is_main:
                self.unwrapped.save_pretrained(staging, state_dict=weights)
                if self.tokenizer is not None:
                    self.tokenizer.save_pretrained(staging)
            del weights
            torch.save(_rng_state(), state_dir / rng_state_name(self.accelerator.process_index))
            if self.is_main:
                torch.save(self.lr_scheduler.state_dict(), state_dir / SCHEDULER_NAME)
                write_json_atomic(state_dir / DATA_STATE_NAME, data_state, sort_keys=True)
                write_json_atomic(state_dir / LOSS_WINDOW_NAME, loss_window)
                write_json_atomic(state_dir / PLAN_NAME, self.plan.to_dict())
            self._barrier()  # everyone has written before the main process marks it complete
            if self.is_main:
                trainer_state.save_to_json(str(staging / TRAINER_STATE_NAME))
                replace_folder(staging, checkpoint_dir(self.output_dir, step))
                rotate_checkpoints(self.output_dir, self.save_total_limit)
        except BaseException:
            if self.is_main:
                shutil.rmtree(staging, ignore_errors=True)
            raise
        self._barrier()
        return checkpoint_dir(self.output_dir, step)

    # ------------------------------------------------------------------ load
    def load(self, folder) -> ResumeState:
        """Restore model, optimizer, scheduler and this rank's RNG from `folder` (every rank calls this), on any
        number of processes; returns the trainer state, data position and loss window to continue with."""
        from transformers.trainer_callback import TrainerState

        folder = Path(folder)
        state_dir = folder / STATE_DIR
        if (folder / TRAINER_STATE_NAME).exists() and not state_dir.is_dir() and (folder / "optimizer.pt").exists():
            raise RecipeError(f"{folder} was written by an earlier version of hf_smallllm (optimizer.pt beside the "
                              f"weights, no {STATE_DIR}/), whose training state this version cannot resume; start a "
                              "new run from its weights with model.init_from")
        if not (folder / TRAINER_STATE_NAME).exists() or not state_dir.is_dir():
            raise RecipeError(f"{folder} is not a complete checkpoint of this pipeline (no {TRAINER_STATE_NAME} or "
                              f"{STATE_DIR}/)")
        saved_plan = _read_json(state_dir / PLAN_NAME) or {}
        if self.deepspeed:
            self._load_deepspeed(state_dir, saved_plan)
        else:
            if (state_dir / DEEPSPEED_DIR).exists():
                raise RecipeError(f"{folder} was written under DeepSpeed ({saved_plan.get('parallelism')}); resume it "
                                  "under DeepSpeed, or start a new run from its weights (model.init_from)")
            self._load_weights(folder)
            self._load_optimizer(state_dir)
        self.lr_scheduler.load_state_dict(load_resume_file(state_dir / SCHEDULER_NAME))
        rng_path = state_dir / rng_state_name(self.accelerator.process_index)
        if rng_path.exists():
            _set_rng_state(load_resume_file(rng_path))
        trainer_state = TrainerState.load_from_json(str(folder / TRAINER_STATE_NAME))
        data_state = _read_json(state_dir / DATA_STATE_NAME)
        if data_state is None:
            raise RecipeError(f"{folder} has no {STATE_DIR}/{DATA_STATE_NAME}; it was not written by this pipeline")
        window = _read_json(state_dir / LOSS_WINDOW_NAME)
        loss_window = (float(window["loss_sum"]), int(window["last_logged_step"])) if window else None
        return ResumeState(trainer_state, data_state, loss_window)

    def _load_deepspeed(self, state_dir: Path, saved_plan: dict) -> None:
        path = state_dir / DEEPSPEED_DIR
        if not path.is_dir():
            raise RecipeError(f"{state_dir.parent} was written without DeepSpeed ({saved_plan.get('parallelism')}); "
                              "resume it without DeepSpeed, or start a new run from its weights (model.init_from)")
        saved_world = saved_plan.get("world_size")
        if saved_world is None or saved_world == self.plan.world_size:
            loaded, _ = self.model.load_checkpoint(str(path), tag=DEEPSPEED_TAG, load_optimizer_states=True,
                                                   load_lr_scheduler_states=False)
            if loaded is None:
                raise RecipeError(f"{path}: DeepSpeed could not load the checkpoint")
            return
        if not self.model.load_universal_checkpoint():
            raise RecipeError(f"this DeepSpeed checkpoint was written by {saved_world} processes and "
                              f"{self.plan.world_size} run now: build the run with build_run (it converts the ZeRO "
                              "partitions to DeepSpeed's universal format), or resume on "
                              f"{saved_world} processes")
        # ZeRO partitions are laid out for the world size that wrote them: rank 0 converts them to DeepSpeed's
        # universal checkpoint (one file per parameter), which every rank then reads its new partition from
        universal = self.output_dir / f"{TEMPORARY_PREFIX}universal-{state_dir.parent.name}"
        if self.is_main:
            shutil.rmtree(universal, ignore_errors=True)
            convert_to_universal(path / DEEPSPEED_TAG, universal / DEEPSPEED_TAG)
        self._barrier()
        try:
            loaded, _ = self.model.load_checkpoint(str(universal), tag=DEEPSPEED_TAG, load_optimizer_states=True,
                                                   load_lr_scheduler_states=False)
            if loaded is None:
                raise RecipeError(f"{universal}: DeepSpeed could not load the converted checkpoint")
        finally:
            self._barrier()
            if self.is_main:
                shutil.rmtree(universal, ignore_errors=True)


def deepspeed_world_size_changes(checkpoint, plan) -> bool:
    """Whether resuming `checkpoint` under `plan` (DeepSpeed) needs the universal conversion: DeepSpeed must be
    told before its engine is built (`checkpoint.load_universal` in its config)."""
    saved = _read_json(Path(checkpoint) / STATE_DIR / PLAN_NAME) or {}
    return (plan.zero_stage is not None and (Path(checkpoint) / STATE_DIR / DEEPSPEED_DIR).is_dir()
            and saved.get("world_size") not in (None, plan.world_size))


def convert_to_universal(source: Path, target: Path) -> None:
    """DeepSpeed's own converter (`deepspeed.checkpoint.ds_to_universal`), run as its command line documents it."""
    import subprocess
    import sys

    target.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
                           str(source), "--output_folder", str(target), "--inject_missing_state",
                           "--num_extract_workers", "1", "--num_merge_workers", "1"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RecipeError(f"{source}: DeepSpeed's ds_to_universal could not convert it for another world size "
                          f"({tail[0]})")


# --- DCP without unpickling code -----------------------------------------------------------------------------------
# torch.distributed.checkpoint reads its `.metadata` index with plain `pickle.load` and its non-tensor items (the
# optimizer's param_groups) with `torch.load(weights_only=False)`: a checkpoint from elsewhere could run code at
# resume. The reader below unpickles the index with an allow-list of the classes DCP writes, and the planner loads
# the items with `weights_only=True`.

_DCP_METADATA_MODULE = "torch.distributed.checkpoint.metadata"
_SAFE_GLOBALS = {("builtins", name) for name in ("set", "frozenset", "list", "dict", "tuple", "slice")}
_SAFE_GLOBALS |= {("collections", "OrderedDict"), ("torch", "Size"), ("pathlib", "PosixPath"),
                  ("torch.serialization", "_get_layout"),  # a layout from its name
                  ("torch.distributed.checkpoint.filesystem", "_StorageInfo")}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == _DCP_METADATA_MODULE or (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.layout)):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not a class torch's checkpoint index uses")


def read_dcp_index(folder, name: str | None = None):
    """The `.metadata` index of a DCP folder, unpickled with the allow-list; a RecipeError for anything else."""
    from torch.distributed.checkpoint.metadata import Metadata

    path = Path(folder) / (name or ".metadata")
    try:
        with open(path, "rb") as handle:
            metadata = _MetadataUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as err:
        raise RecipeError(f"{path.parent.name}/{path.name}: refusing to unpickle it ({err}); it is not an index "
                          "torch.distributed.checkpoint wrote") from None
    if not isinstance(metadata, Metadata):
        raise RecipeError(f"{path.parent.name}/{path.name}: refusing to unpickle it (not a torch.distributed."
                          "checkpoint index)")
    return metadata


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _SafeReader(path):  # noqa: N802 - a class made on first use (torch.distributed.checkpoint is a heavy import)
    from torch.distributed.checkpoint import FileSystemReader

    class SafeFileSystemReader(FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            from torch.distributed.checkpoint.metadata import StorageMeta

            rank = kwargs.get("rank")
            metadata = read_dcp_index(self.path, None if rank is None else f"__{rank}.metadata")
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeFileSystemReader(str(path))


def _safe_load_planner():
    import io

    from torch.distributed.checkpoint import DefaultLoadPlanner

    class WeightsOnlyLoadPlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item, value: io.BytesIO) -> None:
            # checked with weights_only=True first; torch's own loader (weights_only=False) then reads what passed
            try:
                torch.load(value, weights_only=True)
            except pickle.UnpicklingError as err:
                raise RecipeError(f"optimizer state item {read_item.dest_index.fqn}: refusing to unpickle it with "
                                  f"weights_only=True: {str(err).splitlines()[0]}") from None
            value.seek(0)
            super().load_bytes(read_item, value)

    return WeightsOnlyLoadPlanner()


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def read_data_state(checkpoint) -> dict | None:
    """The data stream's position saved in a checkpoint, None when it has none."""
    return _read_json(Path(checkpoint) / STATE_DIR / DATA_STATE_NAME)


__all__ = ["Checkpointer", "ResumeState", "atomic_checkpoint", "checkpoint_global_step", "convert_to_universal",
           "deepspeed_world_size_changes", "load_resume_file",
           "read_data_state", "read_optimizer_state", "remove_stale_temporaries", "resolve_resume",
           "rotate_checkpoints"]
