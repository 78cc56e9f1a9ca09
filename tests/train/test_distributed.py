"""Multi-process training on CPU (gloo) through the one engine: DDP under torchrun matches a 1-process run with the
same global batch; FSDP2 (sharded by the same torch calls accelerate's plugin makes, since accelerate has no FSDP on
CPU) trains like one process, saves sharded checkpoints that every rank writes, survives a kill -9 of one rank and
resumes exactly on 2 processes and on 1, and reshards 1 -> 2 and 2 -> 1. Every final folder is a complete
`save_pretrained` folder. Multi-node launch lines: test_multinode.py."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hf_smallllm import preset_config
from hf_smallllm.families import FAMILIES
from hf_smallllm.runfiles import list_checkpoints
from hf_smallllm.train import read_metrics, run_pretraining
from hf_smallllm.train.checkpointer import read_optimizer_state

from .test_resume import Crash, CrashAtStep

ROOT = Path(__file__).parents[2]
WORKER = "tests/train/distributed_worker.py"


# What a rank prints when C++ calls std::terminate outside any exception. Seen twice in ~100 runs of the DeepSpeed
# (Ulysses) context-parallel launches on a loaded 2-core machine, in one rank shortly after DeepSpeed's import; the
# cause is not found (the worker now prints each thread's Python stack when it happens: faulthandler).
ABORT_SIGNATURE = "terminate called without an active exception"


def torchrun(*args, timeout=600, check=True, nproc=2, retry_abort_after_removing=None):
    """`torchrun --standalone` on this machine's CPU processes. With `retry_abort_after_removing` (a folder, or True
    for none), a launch that fails only because a rank aborted with `ABORT_SIGNATURE` is run once more, after
    removing that folder, with a warning; any other failure fails the test."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if done.returncode and retry_abort_after_removing and ABORT_SIGNATURE in done.stdout + done.stderr:
        import shutil
        import warnings

        warnings.warn(f"a rank aborted ({ABORT_SIGNATURE}); launching again once: {done.stderr[-1500:]}",
                      stacklevel=2)
        if retry_abort_after_removing is not True:
            shutil.rmtree(retry_abort_after_removing, ignore_errors=True)
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(Path(run_dir) / "metrics.jsonl") if "loss" in r}


def weights(run_dir, step):
    return load_file(str(Path(run_dir) / f"checkpoint-{step}" / "model.safetensors"))


def write_recipe(recipe, tmp_path, name, **training):
    recipe = copy.deepcopy(recipe)
    recipe["training"].update(output_dir=str(tmp_path / name), **training)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path, recipe


def assert_same_run(actual_dir, expected_dir, steps, loss_tol=1e-6, weight_tol=1e-6):
    got, want = losses(actual_dir), losses(expected_dir)
    assert sorted(got) == sorted(want) == list(range(1, steps + 1))
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=loss_tol, abs=loss_tol), step
    a, b = weights(actual_dir, steps), weights(expected_dir, steps)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=weight_tol, msg=name)


@pytest.mark.slow
def test_two_process_ddp_run_matches_one_process(tiny_recipe, tmp_path):
    single_path, single = write_recipe(tiny_recipe, tmp_path, "single", max_steps=4, save_steps=4)
    single["schedule"]["warmup_steps"] = 1
    run_pretraining(single)
    ddp_path, ddp = write_recipe(single, tmp_path, "ddp")
    torchrun("training/pretrain.py", "--recipe", str(ddp_path))

    assert_same_run(tmp_path / "ddp", tmp_path / "single", 4, loss_tol=1e-5, weight_tol=1e-5)
    ddp_state = json.loads((tmp_path / "ddp" / "checkpoint-4" / "trainer_state.json").read_text())
    assert ddp_state["num_input_tokens_seen"] == 4 * 256  # both processes' tokens counted once each
    plan = json.loads((tmp_path / "ddp" / "run.json").read_text())["parallel"]
    assert plan["parallelism"] == "ddp" and plan["world_size"] == 2 and plan["micro_batch_rows"] == [1]


@pytest.mark.slow
def test_fsdp2_run_killed_on_one_rank_resumes_exactly_on_two_processes_and_on_one(tiny_recipe, tmp_path):
    """The issue's scenario: FSDP2 over 2 gloo processes, a checkpoint at step 3, rank 1 killed with SIGKILL when
    step 4 begins; resuming on 2 processes and on 1 gives the uninterrupted run's losses and weights (1e-6)."""
    straight_path, _ = write_recipe(tiny_recipe, tmp_path, "straight", parallelism="fsdp2")
    torchrun(WORKER, "pretrain", str(straight_path))
    plan = json.loads((tmp_path / "straight" / "run.json").read_text())["parallel"]
    assert plan["parallelism"] == "fsdp2" and plan["sharded_by"] == "hf_smallllm" and plan["world_size"] == 2
    shards = sorted(p.name for p in (tmp_path / "straight" / "checkpoint-3" / "training_state" / "optimizer").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]  # every rank wrote its shard
    # sharded like one process would train it: the uninterrupted FSDP2 run matches a 1-process run
    single_path, _ = write_recipe(tiny_recipe, tmp_path, "single")
    run_pretraining(single_path)
    assert_same_run(tmp_path / "straight", tmp_path / "single", 6, loss_tol=1e-5, weight_tol=1e-5)

    for name in ("two", "one"):
        path, recipe = write_recipe(tiny_recipe, tmp_path, name, parallelism="fsdp2")
        killed = torchrun(WORKER, "pretrain", str(path), "--kill-rank", "1", "--kill-at", "4", check=False)
        assert killed.returncode != 0
        assert [s for s, _ in list_checkpoints(tmp_path / name)] == [3]
        if name == "two":
            torchrun(WORKER, "pretrain", str(path), "--resume")
        else:
            recipe["training"]["parallelism"] = "auto"
            result = run_pretraining(recipe, resume=True)
            assert result.parallelism == "single"
        assert_same_run(tmp_path / name, tmp_path / "straight", 6)
    # the final folder is a complete save_pretrained folder that loads without the training code
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "two" / "checkpoint-6")
    final = weights(tmp_path / "two", 6)
    for key, value in model.state_dict().items():
        if key in final:
            torch.testing.assert_close(value, final[key], rtol=0, atol=0)


@pytest.mark.slow
def test_checkpoints_reshard_from_one_process_to_two(tiny_recipe, tmp_path):
    """A 1-process run stopped after checkpoint 3 resumes as FSDP2 on 2 processes: the optimizer state written by
    one process is split into two shards and the run continues like the uninterrupted 1-process run. (2 -> 1 is the
    second half of the kill test above.)"""
    straight_path, _ = write_recipe(tiny_recipe, tmp_path, "straight")
    run_pretraining(straight_path)
    fsdp_path, fsdp = write_recipe(tiny_recipe, tmp_path, "fsdp", parallelism="fsdp2")
    with pytest.raises(Crash):
        run_pretraining({**fsdp, "training": {**fsdp["training"], "parallelism": "auto"}},
                        extra_callbacks=[CrashAtStep(4)])
    torchrun(WORKER, "pretrain", str(fsdp_path), "--resume")
    assert json.loads((tmp_path / "fsdp" / "run.json").read_text())["parallel"]["parallelism"] == "fsdp2"
    assert_same_run(tmp_path / "fsdp", tmp_path / "straight", 6, loss_tol=1e-5, weight_tol=1e-5)
    moments = read_optimizer_state(tmp_path / "fsdp" / "checkpoint-6")["state"]
    assert moments["model.embed_tokens.weight"]["exp_avg"].shape == weights(tmp_path / "fsdp", 6)[
        "model.embed_tokens.weight"].shape  # gathered back to full shape from the two shards


@pytest.mark.slow
def test_fsdp2_shards_each_layer_and_trains_like_one_process(tmp_path):
    torch.manual_seed(1)
    vocab = preset_config("tinyllama", "tiny").vocab_size
    batches = [torch.randint(3, vocab, (4, 32)) for _ in range(3)]
    torch.save(batches, tmp_path / "batches.pt")
    torchrun(WORKER, "fsdp2", str(tmp_path / "batches.pt"), str(tmp_path / "fsdp.pt"))
    report = json.loads((tmp_path / "fsdp.pt.json").read_text())
    assert report["dtensor"] and report["shard0"]
    assert report["local_shape"][0] * 2 == report["full_shape"][0]

    torch.manual_seed(0)
    model = FAMILIES["tinyllama"].causal_lm_class(preset_config("tinyllama", "tiny"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for batch in batches:
        model(input_ids=batch, labels=batch).loss.backward()  # the mean over both halves = FSDP's averaged grads
        optimizer.step()
        optimizer.zero_grad()
    sharded = torch.load(tmp_path / "fsdp.pt")
    for name, param in model.state_dict().items():
        torch.testing.assert_close(sharded[name], param, rtol=0, atol=2e-4, msg=name)


@pytest.mark.slow
def test_accelerate_cpu_launch_that_starts_one_process_for_two_is_refused(tiny_recipe, tmp_path):
    """`accelerate launch --cpu --num_processes 2` (no --multi_gpu) runs one process: the run stops in one line
    naming the fix instead of training alone on a quarter of the machine."""
    path, _ = write_recipe(tiny_recipe, tmp_path, "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           "training/pretrain.py", "--recipe", str(path)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert done.returncode != 0
    errors = {line for line in done.stderr.splitlines() if line.startswith("hf-smallllm pretrain: error:")}
    # one line (accelerate's launcher echoes it once more)
    assert len(errors) == 1 and "add --multi_gpu" in errors.pop(), done.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoint-6").exists()


@pytest.mark.slow
def test_accelerate_launch_with_the_fsdp_config_shards_on_cpu(tiny_recipe, tmp_path):
    """The shipped fsdp.yaml on 2 CPU processes: accelerate alone would run DDP there; the run shards with FSDP2
    itself and trains what torchrun's FSDP2 run trains."""
    path, _ = write_recipe(tiny_recipe, tmp_path, "accelerate", max_steps=3, save_steps=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           "training/accelerate/fsdp.yaml", "--num_processes", "2", "--mixed_precision", "no",
                           "training/pretrain.py", "--recipe", str(path)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "parallelism: fsdp2 (sharded by hf_smallllm) on 2 process(es)" in done.stderr
    plan = json.loads((tmp_path / "accelerate" / "run.json").read_text())["parallel"]
    assert plan["parallelism"] == "fsdp2" and plan["launcher"] == "accelerate"
    reference_path, _ = write_recipe(tiny_recipe, tmp_path, "torchrun", max_steps=3, save_steps=3,
                                     parallelism="fsdp2")
    torchrun(WORKER, "pretrain", str(reference_path))
    assert_same_run(tmp_path / "accelerate", tmp_path / "torchrun", 3)
