"""Which parallelism a run is in, checked against what was asked for, before step 1.

A run is launched by `python`, `torchrun` or `accelerate launch`, and may ask for sharding through an accelerate
config (`distributed_type: FSDP` / `DEEPSPEED`) or through the recipe (`training.parallelism`). What is in effect is
decided here, once, and written down (`ParallelPlan`): it is logged at start and saved as `output_dir/run.json` and
in every checkpoint. Whatever was asked for and cannot be honoured stops the run with one line naming the cause and
the fix, never a quiet fallback to something else:

- FSDP asked for on CPU processes: accelerate would silently run DDP there. The run shards the model itself with
  the same torch calls accelerate's FSDP2 plugin makes (`fsdp.apply_fsdp2`), so FSDP2 runs (and is tested) on CPU.
- `accelerate launch --cpu --num_processes 2` (without `--multi_gpu`) starts one process: refused.
- DeepSpeed asked for in the recipe but not launched with a DeepSpeed config, FSDP version 1, or a launcher config
  that contradicts the recipe: refused.

`training.allow_fallback: true` (`--allow-fallback`) turns these refusals into warnings.

The shared-storage check lives here too: every rank writes its part of a checkpoint into the same folder and rank 0
renames it, so `output_dir` (and the tokenizer and prepared data) must be one folder that every node sees.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .recipe import PARALLELISMS, RecipeError

logger = logging.getLogger(__name__)

RUN_INFO_NAME = "run.json"


def env_flag(name: str) -> bool:
    """Whether a launcher's boolean environment variable is set (accelerate writes "true"/"True")."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


@dataclass
class ParallelPlan:
    """How this run is laid out over processes; `describe()` is the line logged at start."""

    world_size: int
    ranks_per_node: int
    nodes: int
    parallelism: str  # single | ddp | fsdp2 | zero1 | zero2 | zero3
    sharded_by: str | None  # who applied the sharding: "accelerate", "hf_smallllm" (FSDP2 on CPU), None
    launcher: str  # python | torchrun | accelerate
    micro_batch_rows: list[int]  # rows per micro-batch on each group, per sequence-length phase (of the first stage)
    seq_lens: list[int]
    gradient_accumulation_steps: int  # of the first stage
    tokens_per_step: int  # of the first stage
    device: str
    notes: list[str] = field(default_factory=list)  # fallbacks allowed by training.allow_fallback
    stages: list[str] = field(default_factory=list)  # the per-rank layout of every stage of a staged recipe
    # per stage: ranks sharing one sequence (train/context_parallel.py); world / this = data-parallel groups
    context_parallel: list[int] = field(default_factory=lambda: [1])

    def data_parallel_size(self, stage: int = 0) -> int:
        """Groups of ranks that read different rows in stage `stage` (the ranks of a context-parallel group read the
        same ones)."""
        return self.world_size // self.context_parallel[stage]

    @property
    def sharded(self) -> bool:
        return self.parallelism in ("fsdp2", "zero1", "zero2", "zero3")

    @property
    def zero_stage(self) -> int | None:
        return int(self.parallelism[-1]) if self.parallelism.startswith("zero") else None

    def describe(self) -> str:
        rows = ", ".join(f"{r} x {s}" for r, s in zip(self.micro_batch_rows, self.seq_lens, strict=True))
        by = f" (sharded by {self.sharded_by})" if self.sharded_by else ""
        sizes = self.context_parallel
        # with rows split, the ranks of a group read the same rows: the layout is the group's (first stage's here)
        reader = "per rank" if sizes[0] == 1 else "per context-parallel group"
        reader += " in the first stage" if len(self.stages) > 1 else ""
        if len(set(sizes)) > 1:
            by += (f", context parallel by stage {'/'.join(map(str, sizes))} (DeepSpeed Ulysses: each row split over "
                   "that many ranks)")
        elif sizes[0] > 1:
            by += (f", context parallel {sizes[0]} (DeepSpeed Ulysses: each row split over {sizes[0]} ranks, "
                   f"{self.data_parallel_size()} data-parallel group(s))")
        return (f"{self.parallelism}{by} on {self.world_size} process(es) = {self.nodes} node(s) x "
                f"{self.ranks_per_node} rank(s) per node, {self.device}, launched by {self.launcher}; {reader}: "
                f"micro-batches of {rows} tokens, {self.gradient_accumulation_steps} accumulation step(s); "
                f"{self.tokens_per_step:,d} tokens per optimizer step"
                + (f"; stages: {'; '.join(self.stages)}" if len(self.stages) > 1 else ""))

    def to_dict(self) -> dict:
        return asdict(self)


def launcher_name() -> str:
    if "ACCELERATE_MIXED_PRECISION" in os.environ or any(k.startswith("ACCELERATE_USE_") for k in os.environ):
        return "accelerate"
    if "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_WORLD_SIZE" in os.environ:
        return "torchrun"
    return "python"


def requested_parallelism(recipe_value: str) -> tuple[str, str]:
    """(what was asked for, where it was asked): the recipe's `training.parallelism` unless "auto", else the
    accelerate config's FSDP/DeepSpeed choice, else "auto"."""
    if recipe_value != "auto":
        return recipe_value, "training.parallelism"
    if env_flag("ACCELERATE_USE_DEEPSPEED"):
        stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "")
        return (f"zero{stage}" if stage in ("1", "2", "3") else "zero"), "the accelerate config (DeepSpeed)"
    if env_flag("ACCELERATE_USE_FSDP"):
        version = os.environ.get("FSDP_VERSION", "1")
        return ("fsdp2" if version == "2" else f"fsdp{version}"), "the accelerate config (FSDP)"
    return "auto", "default"


def _refuse(message: str, allow_fallback: bool, notes: list[str]) -> None:
    if not allow_fallback:
        raise RecipeError(message + " (training.allow_fallback: true / --allow-fallback runs anyway)")
    logger.warning("%s; going on because training.allow_fallback is set", message)
    notes.append(message)


def _micro_rows(tokens_per_step: int, seq_lens: list[int], accumulation: int, world: int) -> list[int]:
    return [tokens_per_step // seq_len // (accumulation * world) for seq_len in seq_lens]


def check_stage_context_parallel(recipe, world: int) -> None:
    """A one-line refusal where a stage's `training.context_parallel` (ranks sharing one row) does not divide the
    `world` processes. The model's side (heads, row lengths) is `context_parallel.check_context_parallel`."""
    stages = recipe.stage_plans
    for stage in stages:
        size = stage.training.context_parallel
        if world % size:
            where = f"stage {stage.name!r}: " if len(stages) > 1 else ""
            raise RecipeError(f"{where}training.context_parallel={size} does not divide the {world} process(es); "
                              f"launch a multiple of {size}")


def plan_parallelism(accelerator, recipe, layouts) -> ParallelPlan:
    """Decide what this run does (see the module docstring). `layouts` is the stream's per-stage
    `data.stream.StageLayout` (name, tokens per step, row lengths, accumulation, ranks per row), built for sizes
    that `check_stage_context_parallel` accepted."""
    from accelerate.utils import DistributedType

    training = recipe.training
    allow = training.allow_fallback
    notes: list[str] = []
    world = accelerator.num_processes
    distributed = accelerator.distributed_type
    asked, where = requested_parallelism(training.parallelism)

    if asked == "fsdp1":
        _refuse(f"{where} asks for FSDP version 1; this package trains with FSDP2 only: set fsdp_version: 2",
                False, notes)
    # accelerate's simple launcher (`--cpu --num_processes N` without --multi_gpu) starts one process, yet exports
    # the rendezvous address it would have needed for N; a real multi-process launch also sets WORLD_SIZE
    if (world == 1 and env_flag("ACCELERATE_USE_CPU") and "MASTER_ADDR" in os.environ
            and "WORLD_SIZE" not in os.environ):
        _refuse("accelerate launch was asked for several processes but started one (its simple launcher); on CPU add "
                "--multi_gpu to `accelerate launch` (it starts gloo processes; --cpu alone runs one)", allow, notes)

    if distributed == DistributedType.DEEPSPEED:
        stage = accelerator.state.deepspeed_plugin.zero_stage
        parallelism, sharded_by = f"zero{stage}", "accelerate"
        if asked not in ("auto", "zero", parallelism):
            _refuse(f"{where} asks for {asked} but the run was launched with DeepSpeed ZeRO-{stage}", allow, notes)
    elif distributed == DistributedType.FSDP:
        parallelism, sharded_by = "fsdp2", "accelerate"
        if getattr(accelerator.state.fsdp_plugin, "fsdp_version", 2) != 2:
            _refuse("the accelerate config asks for FSDP version 1; set fsdp_version: 2", False, notes)
        if asked not in ("auto", "fsdp2"):
            _refuse(f"{where} asks for {asked} but the run was launched with FSDP", allow, notes)
    elif asked.startswith("zero"):
        parallelism, sharded_by = ("ddp" if world > 1 else "single"), None
        _refuse(f"{where} asks for DeepSpeed {asked} but the run was not launched with DeepSpeed; use `accelerate "
                "launch --config_file training/accelerate/deepspeed_zero1.yaml` (pip install deepspeed)", allow, notes)
    elif asked == "fsdp2" and world > 1:
        # accelerate has no FSDP on CPU (it would run DDP): shard with the same torch calls its FSDP2 plugin makes
        parallelism, sharded_by = "fsdp2", "hf_smallllm"
    elif asked == "fsdp2":
        parallelism, sharded_by = "single", None
        _refuse(f"{where} asks for FSDP2 but only 1 process runs; launch several (torchrun --nproc_per_node N, or "
                "accelerate launch --multi_gpu --num_processes N)", allow, notes)
    elif asked == "ddp" and world == 1:
        parallelism, sharded_by = "single", None
        _refuse(f"{where} asks for DDP but only 1 process runs; launch several", allow, notes)
    else:
        parallelism, sharded_by = ("ddp" if world > 1 else "single"), None

    ranks_per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world if world == 1 else 0)) or world
    nodes = max(1, world // ranks_per_node)
    # the ranks of a context-parallel group share rows: rows per micro-batch count data-parallel groups only
    first = layouts[0]
    stages = []
    for layout in layouts:
        groups = world // layout.ranks_per_row
        rows = ", ".join(f"{r} x {s}" for r, s in zip(
            _micro_rows(layout.tokens_per_step, layout.seq_lens, layout.accumulation, groups), layout.seq_lens,
            strict=True))
        split = (f", each row over {layout.ranks_per_row} ranks ({groups} data-parallel group(s))"
                 if layout.ranks_per_row > 1 else "")
        stages.append(f"{layout.name}: {rows} tokens x {layout.accumulation} = {layout.tokens_per_step:,d} per "
                      f"step{split}")
    return ParallelPlan(world_size=world, ranks_per_node=ranks_per_node, nodes=nodes, parallelism=parallelism,
                        sharded_by=sharded_by, launcher=launcher_name(),
                        micro_batch_rows=_micro_rows(first.tokens_per_step, first.seq_lens, first.accumulation,
                                                     world // first.ranks_per_row),
                        seq_lens=list(first.seq_lens), gradient_accumulation_steps=first.accumulation,
                        tokens_per_step=first.tokens_per_step, device=str(accelerator.device), notes=notes,
                        stages=stages, context_parallel=[layout.ranks_per_row for layout in layouts])


def check_shared_storage(output_dir: Path, paths: list[str | os.PathLike] = ()) -> None:
    """With several processes, check before step 1 that every rank sees the file rank 0 just wrote in `output_dir`
    and each of `paths` (tokenizer, prepared data, init checkpoint) that exists on rank 0 (a Hub id does not);
    otherwise every rank stops with the same one-line RecipeError naming the hosts that could not see it. A no-op
    without a process group."""
    import secrets

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    # rank 0's view: the marker's name and which of `paths` are folders or files there (the others may be Hub ids)
    token = [(secrets.token_hex(8), [str(p) for p in paths if p and Path(p).exists()])
             if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(token, src=0)
    token, paths = token[0][0], token[0][1]
    marker = Path(output_dir) / f".shared-storage-check-{token}"
    if dist.get_rank() == 0:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(socket.gethostname(), encoding="utf-8")
    dist.barrier()
    missing = [] if marker.exists() else [str(output_dir)]
    missing += [str(p) for p in paths if p and not Path(p).exists()]
    seen = [None] * dist.get_world_size()
    dist.all_gather_object(seen, (socket.gethostname(), dist.get_rank(), missing))
    dist.barrier()
    if dist.get_rank() == 0:
        marker.unlink(missing_ok=True)
    blind = [(host, rank, what) for host, rank, what in seen if what]
    if blind:
        host, rank, what = blind[0]
        hosts = sorted({h for h, _, _ in blind})
        raise RecipeError(f"{what[0]} is not on shared storage: rank {rank} on {host} cannot see it (hosts "
                          f"{', '.join(hosts)}); put training.output_dir, the tokenizer and the prepared data on a "
                          "filesystem every node mounts (docs/multinode.md)")


def end_process_group() -> None:
    """Wait for every rank, then tear the process group down: the last call of a launched run (the CLI's pretrain,
    the distributed checks). A rank that exits with its gloo group alive can abort in interpreter shutdown
    ("terminate called without an active exception") while the group's worker threads are destroyed, and a rank
    that tears down before the others finish leaves them waiting; the barrier and the explicit destroy avoid both.
    A no-op without a process group (a library caller keeps its own)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    dist.destroy_process_group()


def write_run_info(output_dir: Path, plan: ParallelPlan, extra: dict | None = None) -> Path:
    """`output_dir/run.json`: the plan and versions of this run (rewritten at every start, resumes included)."""
    import accelerate
    import torch
    import transformers

    from ..runfiles import write_json_atomic

    info = {"parallel": plan.to_dict(), "versions": {"torch": torch.__version__,
                                                     "transformers": transformers.__version__,
                                                     "accelerate": accelerate.__version__}, **(extra or {})}
    return write_json_atomic(Path(output_dir) / RUN_INFO_NAME, info)


__all__ = ["PARALLELISMS", "RUN_INFO_NAME", "ParallelPlan", "check_shared_storage", "check_stage_context_parallel",
           "end_process_group", "env_flag", "launcher_name", "plan_parallelism", "requested_parallelism",
           "write_run_info"]
