"""Multi-process training on CPU: DDP through the Trainer entry point under torchrun (2 processes, gloo) matches a
1-process run with the same global batch; FSDP2 wrapping (`apply_fsdp2`) really shards and trains like one process.
accelerate's own FSDP path needs GPUs (on CPU it silently becomes DDP), so it is not what is tested here."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_smallllm import preset_config
from hf_smallllm.families import FAMILIES
from hf_smallllm.train import read_metrics, run_pretraining

ROOT = Path(__file__).parents[2]


def torchrun(*args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_two_process_ddp_run_matches_one_process(tiny_recipe, tmp_path):
    recipe = copy.deepcopy(tiny_recipe)
    recipe["training"].update(max_steps=4, save_steps=4)
    recipe["schedule"]["warmup_steps"] = 1
    single = copy.deepcopy(recipe)
    single["training"]["output_dir"] = str(tmp_path / "single")
    reference = run_pretraining(single)

    recipe_path = tmp_path / "recipe.yaml"
    import yaml

    recipe["training"]["output_dir"] = str(tmp_path / "ddp")
    recipe_path.write_text(yaml.safe_dump(recipe))
    torchrun("training/pretrain.py", "--recipe", str(recipe_path))

    ddp_losses = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "ddp" / "metrics.jsonl") if "loss" in r}
    single_losses = {r["step"]: r["loss"] for r in read_metrics(reference.metrics_path) if "loss" in r}
    assert sorted(ddp_losses) == [1, 2, 3, 4]
    for step in ddp_losses:
        assert ddp_losses[step] == pytest.approx(single_losses[step], rel=2e-3), step
    ddp_state = json.loads((tmp_path / "ddp" / "checkpoint-4" / "trainer_state.json").read_text())
    assert ddp_state["num_input_tokens_seen"] == 4 * 256  # both processes' tokens counted once each
    a = load_file(str(tmp_path / "single" / "checkpoint-4" / "model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "checkpoint-4" / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=2e-3, msg=name)


@pytest.mark.slow
def test_fsdp2_shards_each_layer_and_trains_like_one_process(tmp_path):
    torch.manual_seed(1)
    vocab = preset_config("tinyllama", "tiny").vocab_size
    batches = [torch.randint(3, vocab, (4, 32)) for _ in range(3)]
    torch.save(batches, tmp_path / "batches.pt")
    torchrun("tests/train/distributed_worker.py", "fsdp2", str(tmp_path / "batches.pt"), str(tmp_path / "fsdp.pt"))
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
