"""The memory plan (train/memory_plan.py): parameter counts equal the model's, the terms scale as the layout says,
the ChuXin stages get a layout, and the activation terms agree with peak memory measured on CPU (within 20%)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_smallllm import FAMILIES, preset_config
from hf_smallllm.train.memory_plan import (
    GIB,
    best_layout,
    context_parallel_sizes,
    parameter_counts,
    plan_markdown,
    stage_plan,
    training_memory,
)

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("family, preset", [("chuxin", "published"), ("btlm", "tiny"), ("geb", "tiny")])
def test_parameter_counts_match_the_model(family, preset):
    config = preset_config(family, preset)
    with torch.device("meta"):
        model = FAMILIES[family].causal_lm_class(config)
    total, layer, _ = parameter_counts(config)
    assert total == sum(p.numel() for p in model.parameters())
    assert layer == sum(p.numel() for p in model.model.layers[0].parameters())


def test_terms_scale_with_the_layout():
    config = preset_config("chuxin", "published", loss_chunk_size=8192)
    one = training_memory(config, 131072, gpus=8, context_parallel=1)
    split = training_memory(config, 131072, gpus=8, context_parallel=8)
    assert split.local_tokens * 8 == one.local_tokens
    assert split.checkpoints * 8 == one.checkpoints
    assert training_memory(config, 131072, gpus=64).optimizer * 8 == one.optimizer
    # the figure: checkpointed activations of one 1M row of ChuXin-1.6B, bf16, are ~96 GiB
    assert training_memory(config, 2**20).checkpoints / GIB == pytest.approx(96, rel=0.01)
    with pytest.raises(ValueError, match="context_parallel=3"):
        training_memory(config, 131072, gpus=8, context_parallel=3)


def test_chuxin_stages_get_a_layout_that_fits():
    config = preset_config("chuxin", "published", loss_chunk_size=8192)
    assert context_parallel_sizes(config, 64) == [1, 2, 4, 8, 16, 32]  # 32 heads bound Ulysses
    assert best_layout(config, 2**20, 1).total / GIB > 80  # one GPU cannot hold a 1M row
    plan = stage_plan(config, [32768, 131072, 2**20])
    assert all(stage["smallest_cluster"] for stage in plan)
    assert plan[-1]["layouts"][8].context_parallel > 1  # 1M needs its rows split
    table = plan_markdown(config, [32768, 2**20], name="ChuXin-1.6B")
    assert "| 1M | 8 |" in table and "smallest cluster" in table


MEASURE = """
import json, sys, torch
from hf_smallllm import FAMILIES, preset_config

def status(field):  # kB in /proc/self/status
    line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024

length, hidden, inter = (int(x) for x in sys.argv[1:4])
torch.manual_seed(0)
config = preset_config("chuxin", "tiny", hidden_size=hidden, intermediate_size=inter, num_hidden_layers=2,
                       vocab_size=2048, loss_chunk_size=1024, max_position_embeddings=length)
model = FAMILIES["chuxin"].causal_lm_class(config).train()
model.activation_checkpointing_enable()
ids = torch.randint(3, 2048, (1, length))
with open("/proc/self/clear_refs", "w") as f:  # the peak (VmHWM) restarts from the current resident set
    f.write("5")
before = status("VmRSS")
model(input_ids=ids, labels=ids).loss.backward()
print(json.dumps(status("VmHWM") - before))
"""


@pytest.mark.slow
@pytest.mark.parametrize("length, hidden, inter", [(8192, 256, 688), (16384, 128, 344)])
def test_estimate_matches_measured_peak_on_cpu(length, hidden, inter):
    """One fp32 training step with checkpointing and chunked loss in a fresh process: the growth of its peak
    resident memory over the step (the kernel's high-water mark reset just before it, so import-time peaks do not
    count) against the plan's terms for that step (gradients and activations; the weights exist before)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "1048576"}
    done = subprocess.run([sys.executable, "-c", MEASURE, str(length), str(hidden), str(inter)], env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    config = preset_config("chuxin", "tiny", hidden_size=hidden, intermediate_size=inter, num_hidden_layers=2,
                           vocab_size=2048, loss_chunk_size=1024)
    estimate = training_memory(config, length, compute_bytes=4, optimizer=False, sharded=False, reserved_gib=0)
    assert estimate.total - estimate.weights == pytest.approx(measured, rel=0.2)


def test_long_chuxin_recipe_layout_fits_its_cluster():
    """long-chuxin on the 32 GPUs its comments name: every stage's rows divide among its data-parallel groups, the
    memory plan of that layout fits an H100-80GB, and each stage's context-parallel size is the plan's choice (the
    smallest that fits and leaves every group a row)."""
    from hf_smallllm.train.memory_plan import H100_80GB_GIB
    from hf_smallllm.train.recipe import load_recipe

    recipe = load_recipe("long-chuxin")
    gpus = 32
    config = preset_config("chuxin", "published", **recipe.model.config)
    for stage in recipe.stage_plans:
        (phase,) = stage.seq_len_phases
        context, accumulation = stage.training.context_parallel, stage.training.gradient_accumulation_steps
        rows, groups = stage.data.tokens_per_step // phase["seq_len"], gpus // context
        per_group = rows // (accumulation * groups)
        assert per_group >= 1 and rows % (accumulation * groups) == 0, stage.name
        estimate = training_memory(config, phase["seq_len"], gpus, context, rows=per_group)
        assert estimate.local_tokens == 131072 and estimate.total / GIB < H100_80GB_GIB, stage.name
        smaller = [size for size in context_parallel_sizes(config, gpus) if size < context
                   and rows % (accumulation * gpus // size) == 0
                   and training_memory(config, phase["seq_len"], gpus, size,
                                       rows=rows // (accumulation * gpus // size)).total / GIB < H100_80GB_GIB]
        assert not smaller, (stage.name, smaller)
    assert [stage.training.context_parallel for stage in recipe.stage_plans] == [1, 1, 8]
