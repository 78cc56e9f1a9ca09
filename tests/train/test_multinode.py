"""The multi-node launch lines of docs/multinode.md, run as two "nodes" on 127.0.0.1: each node is its own launcher
process (torchrun with the c10d rendezvous, or `accelerate launch` with --num_machines 2) starting one CPU training
process, so the run is 2 processes over gloo. The two-node run must train like one process with the same global
batch, and two nodes that do not share the output folder must stop with a "shared storage" error instead of hanging
or writing half a checkpoint each. The Slurm scripts in training/slurm/ are run under a stand-in `srun`/`scontrol` to
check the launch line each node gets."""

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
NODE_TIMEOUT = 240  # seconds for both nodes together; a 4-step tiny run takes well under a minute


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           # keep a developer's ~/.cache/huggingface/accelerate/default_config.yaml out of `accelerate launch`
           "HF_HOME": str(tmp_path / "hf_home")}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "ACCELERATE_USE_CPU", "TORCHELASTIC_RUN_ID"):
        env.pop(name, None)
    return env


def run_nodes(commands: list[list[str]], tmp_path: Path, timeout: float = NODE_TIMEOUT) -> list[dict]:
    """Start one process (group) per node, wait for all of them, and kill every group still running after `timeout`
    (or when the test fails) so that no launcher or worker outlives the test. Returns each node's exit status and
    output; a node that had to be killed has returncode None."""
    env = node_env(tmp_path)
    nodes = []
    try:
        for rank, command in enumerate(commands):
            stdout = open(tmp_path / f"node{rank}.out", "w+")
            stderr = open(tmp_path / f"node{rank}.err", "w+")
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=stdout, stderr=stderr,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
            nodes.append((process, stdout, stderr))
        deadline = time.monotonic() + timeout
        while any(process.poll() is None for process, _, _ in nodes) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        results = []
        for process, stdout, stderr in nodes:
            killed = process.poll() is None
            if killed:
                os.killpg(process.pid, signal.SIGKILL)  # the launcher and the workers it started
                process.wait()
            stdout.seek(0)
            stderr.seek(0)
            results.append({"returncode": None if killed else process.returncode, "stdout": stdout.read(),
                            "stderr": stderr.read()})
            stdout.close()
            stderr.close()
    return results


def describe(results: list[dict]) -> str:
    return "\n".join(f"--- node {rank}: exit {r['returncode']}\n{r['stdout'][-2000:]}\n{r['stderr'][-4000:]}"
                     for rank, r in enumerate(results))


def torchrun_node(node_rank: int, port: int, run_id: str, *script_args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
            "--node_rank", str(node_rank), "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
            "--rdzv_id", run_id, "training/pretrain.py", *script_args]


def accelerate_node(machine_rank: int, port: int, *script_args: str) -> list[str]:
    # --multi_gpu is what starts torchrun underneath; on a machine without GPUs the workers come up as MULTI_CPU
    # over gloo. (`--cpu --num_processes 2` would start ONE process: accelerate's simple launcher.)
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2",
            "--machine_rank", str(machine_rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
            "--num_processes", "2", "training/pretrain.py", *script_args]


@pytest.fixture
def four_step_recipe(tiny_recipe, tmp_path):
    """(recipe file for the two-node run, per-step losses of the same recipe trained by one process)."""
    from hf_smallllm.train import read_metrics, run_pretraining

    recipe = copy.deepcopy(tiny_recipe)
    recipe["training"].update(max_steps=4, save_steps=4)
    recipe["schedule"]["warmup_steps"] = 1
    single = copy.deepcopy(recipe)
    single["training"]["output_dir"] = str(tmp_path / "single")
    reference = run_pretraining(single)
    losses = {r["step"]: r["loss"] for r in read_metrics(reference.metrics_path) if "loss" in r}
    assert sorted(losses) == [1, 2, 3, 4]

    recipe["training"]["output_dir"] = str(tmp_path / "two_nodes")
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    return recipe_path, losses


def check_two_node_run(output_dir: Path, single_losses: dict[int, float], results: list[dict], launcher: str) -> None:
    assert all(r["returncode"] == 0 for r in results), describe(results)
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = {r["step"]: r["loss"] for r in records if "loss" in r}
    assert sorted(losses) == sorted(single_losses), describe(results)
    for step, loss in losses.items():
        assert loss == pytest.approx(single_losses[step], rel=1e-5), (step, loss, single_losses[step])
    checkpoint = output_dir / "checkpoint-4"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "config.json").is_file()
    # both processes took part, one per node: each saved its own RNG state into the shared checkpoint folder
    assert sorted(p.name for p in checkpoint.rglob("rng_state*.pth")) == ["rng_state_0.pth", "rng_state_1.pth"]
    plan = json.loads((output_dir / "run.json").read_text())["parallel"]
    assert (plan["world_size"], plan["nodes"], plan["ranks_per_node"], plan["launcher"]) == (2, 2, 1, launcher)


@pytest.mark.slow
def test_torchrun_c10d_two_nodes_match_one_process(four_step_recipe, tmp_path):
    recipe_path, single_losses = four_step_recipe
    port, run_id = free_port(), f"test-{os.getpid()}"
    results = run_nodes([torchrun_node(rank, port, run_id, "--recipe", str(recipe_path)) for rank in (0, 1)],
                        tmp_path)
    check_two_node_run(tmp_path / "two_nodes", single_losses, results, "torchrun")


@pytest.mark.slow
def test_accelerate_launch_two_machines_match_one_process(four_step_recipe, tmp_path):
    recipe_path, single_losses = four_step_recipe
    port = free_port()
    results = run_nodes([accelerate_node(rank, port, "--recipe", str(recipe_path)) for rank in (0, 1)], tmp_path)
    check_two_node_run(tmp_path / "two_nodes", single_losses, results, "accelerate")


@pytest.mark.slow
def test_nodes_without_a_shared_output_folder_stop_with_a_clear_error(tiny_recipe, tmp_path):
    recipe = copy.deepcopy(tiny_recipe)
    recipe["training"].update(max_steps=2, save_steps=2)
    recipe["schedule"]["warmup_steps"] = 1
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    port, run_id = free_port(), f"test-{os.getpid()}"
    results = run_nodes([torchrun_node(rank, port, run_id, "--recipe", str(recipe_path),
                                       "--set", f"training.output_dir={tmp_path / f'node{rank}_run'}")
                         for rank in (0, 1)], tmp_path, timeout=180)
    assert all(r["returncode"] not in (None, 0) for r in results), describe(results)
    assert "shared storage" in "".join(r["stderr"] for r in results), describe(results)
    assert not list((tmp_path / "node0_run").glob("checkpoint-*")) and not list(
        (tmp_path / "node1_run").glob("checkpoint-*")), describe(results)


FAKE_SLURM = {
    "scontrol": """#!/bin/bash
[[ $1 == show && $2 == hostnames && -n $3 ]] || exit 1
echo gpu-node-a
sleep 0.2  # a reader that stops after the first line (| head -n1) would have closed the pipe by now
echo gpu-node-b
""",
    # like `srun --ntasks-per-node=1`: the command once per node, each with its own SLURM_NODEID
    "srun": """#!/bin/bash
printf '%s\\n' "$@" > "$FAKE_OUT/srun.args"
while [[ $1 == -* ]]; do shift; done
for ((i = 0; i < SLURM_NNODES; i++)); do SLURM_NODEID=$i "$@" || exit 1; done
""",
    # the launchers only record what they were given
    "torchrun": """#!/bin/bash
printf '%s\\n' "$@" > "$FAKE_OUT/node$SLURM_NODEID.args"
""",
}
FAKE_SLURM["accelerate"] = FAKE_SLURM["torchrun"]


@pytest.mark.parametrize("script", ["pretrain_torchrun.sbatch", "pretrain_accelerate.sbatch"])
def test_sbatch_scripts_start_one_launcher_per_node_with_its_rank(script, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in FAKE_SLURM.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_OUT": str(tmp_path), "SLURM_NNODES": "2",
           "SLURM_JOB_ID": "777", "SLURM_JOB_NODELIST": "gpu-node-[a-b]", "SLURM_GPUS_ON_NODE": "4",
           "SLURM_CPUS_PER_TASK": "16", "RECIPE": "published-btlm"}
    command = ["bash", str(ROOT / "training" / "slurm" / script), "--set", "training.max_steps=10"]
    missing = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "OUTPUT_DIR" in missing.stderr  # no output folder, no run

    done = subprocess.run(command, cwd=ROOT, env={**env, "OUTPUT_DIR": "/shared/runs/btlm"}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    srun = (tmp_path / "srun.args").read_text().splitlines()
    assert "--ntasks-per-node=1" in srun and "--cpus-per-task=16" in srun
    script_args = ["training/pretrain.py", "--recipe", "published-btlm",
                   "--set", "training.output_dir=/shared/runs/btlm", "--set", "training.max_steps=10"]
    for node in (0, 1):
        args = (tmp_path / f"node{node}.args").read_text().splitlines()
        if script == "pretrain_torchrun.sbatch":
            assert args == ["--nnodes", "2", "--nproc_per_node", "4", "--node_rank", str(node),
                            "--rdzv_backend", "c10d", "--rdzv_endpoint", "gpu-node-a:29500", "--rdzv_id", "777",
                            *script_args]
        else:
            assert args == ["launch", "--config_file", "training/accelerate/fsdp.yaml", "--num_machines", "2",
                            "--machine_rank", str(node), "--main_process_ip", "gpu-node-a", "--main_process_port",
                            "29500", "--num_processes", "8", *script_args]  # the total over both nodes
