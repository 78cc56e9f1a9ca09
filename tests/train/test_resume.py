"""Resume equivalence: a run interrupted after its checkpoint and resumed ends with the same parameters, the same
loss curve and the same data order as an uninterrupted run; a run killed mid-save resumes from the previous complete
checkpoint; every checkpoint is a complete `save_pretrained` folder. (Multi-process runs: test_distributed.py.)"""

import copy
import json
import pickle

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_smallllm.runfiles import list_checkpoints
from hf_smallllm.train import read_metrics, run_pretraining
from hf_smallllm.train.recipe import RecipeError


class Crash(Exception):
    pass


class CrashAtStep(TrainerCallback):
    """Simulates a killed process: raises when step `step` begins (after the earlier checkpoint was written)."""

    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Crash(f"killed before step {self.step + 1}")


def final_weights(output_dir):
    return load_file(str(output_dir / "checkpoint-6" / "model.safetensors"))


def losses(path):
    return {r["step"]: r["loss"] for r in read_metrics(path) if "loss" in r}


def test_interrupted_and_resumed_run_matches_the_straight_run(tiny_recipe, tmp_path):
    straight = copy.deepcopy(tiny_recipe)
    straight["training"]["output_dir"] = str(tmp_path / "straight")
    result = run_pretraining(straight)
    assert result.global_step == 6 and [s for s, _ in list_checkpoints(result.output_dir)] == [3, 6]

    interrupted = copy.deepcopy(tiny_recipe)
    interrupted["training"]["output_dir"] = str(tmp_path / "interrupted")
    with pytest.raises(Crash):
        run_pretraining(interrupted, extra_callbacks=[CrashAtStep(4)])
    run_dir = tmp_path / "interrupted"
    assert [s for s, _ in list_checkpoints(run_dir)] == [3]
    with pytest.raises(RecipeError, match="--resume"):
        run_pretraining(interrupted)  # refuses to overwrite a run silently
    resumed = run_pretraining(interrupted, resume=True)
    assert resumed.global_step == 6 and resumed.tokens_seen == result.tokens_seen == 6 * 256

    expected, actual = final_weights(result.output_dir), final_weights(run_dir)
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)
    straight_losses, resumed_losses = losses(result.metrics_path), losses(resumed.metrics_path)
    assert sorted(straight_losses) == list(range(1, 7))
    for step in range(1, 7):
        assert resumed_losses[step] == pytest.approx(straight_losses[step], abs=1e-5), step


def test_run_killed_mid_save_resumes_from_the_previous_checkpoint(tiny_recipe, tmp_path):
    recipe = copy.deepcopy(tiny_recipe)
    run_dir = tmp_path / "run"
    with pytest.raises(Crash):
        run_pretraining(recipe, extra_callbacks=[CrashAtStep(4)])
    # What a kill during the next save leaves behind: a half-written temporary folder.
    partial = run_dir / ".tmp-checkpoint-6"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 10)
    assert [s for s, _ in list_checkpoints(run_dir)] == [3]
    resumed = run_pretraining(recipe, resume=True)
    assert resumed.global_step == 6 and not partial.exists()
    assert [s for s, _ in list_checkpoints(run_dir)] == [3, 6]


def test_every_checkpoint_is_a_complete_model_folder(tiny_recipe, tmp_path):
    """A checkpoint loads with from_pretrained (weights, config, tokenizer) and keeps resume-only state in one
    sub-folder that publishing skips; run.json says how the run was laid out."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = copy.deepcopy(tiny_recipe)
    recipe["training"]["max_steps"] = 3
    result = run_pretraining(recipe)
    folder = result.final_checkpoint
    assert {"config.json", "model.safetensors", "trainer_state.json", "tokenizer.json"} <= {
        p.name for p in folder.iterdir()}
    state = {p.name for p in (folder / "training_state").iterdir()}
    assert {"optimizer", "scheduler.pt", "rng_state_0.pth", "data_state.json", "loss_window.json", "run.json"} <= state
    model = AutoModelForCausalLM.from_pretrained(folder)
    saved = load_file(str(folder / "model.safetensors"))
    for name, value in saved.items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)
    assert AutoTokenizer.from_pretrained(folder).eos_token_id is not None
    info = json.loads((result.output_dir / "run.json").read_text())
    assert info["parallel"]["parallelism"] == "single" and info["parallel"]["world_size"] == 1
    assert result.parallelism == "single"


def test_a_recipe_with_the_removed_entry_key_gets_one_line_naming_it(tiny_recipe):
    recipe = copy.deepcopy(tiny_recipe)
    recipe["training"]["entry"] = "trainer"
    with pytest.raises(RecipeError, match=r"training.entry: every pretraining run goes through one engine"):
        run_pretraining(recipe)


@pytest.mark.parametrize("parallelism", ["fsdp2", "ddp", "zero2"])
def test_asking_for_parallelism_that_one_process_cannot_give_stops_the_run(tiny_recipe, parallelism):
    recipe = copy.deepcopy(tiny_recipe)
    recipe["training"]["parallelism"] = parallelism
    with pytest.raises(RecipeError, match=r"(only 1 process runs|not launched with DeepSpeed).*allow-fallback"):
        run_pretraining(recipe)
    assert not list_checkpoints(recipe["training"]["output_dir"])


def test_allow_fallback_runs_and_records_what_was_in_effect(tiny_recipe):
    recipe = copy.deepcopy(tiny_recipe)
    recipe["training"].update(parallelism="fsdp2", allow_fallback=True, max_steps=3)
    result = run_pretraining(recipe)
    info = json.loads((result.output_dir / "run.json").read_text())
    assert info["parallel"]["parallelism"] == "single" and "FSDP2" in info["parallel"]["notes"][0]


class RunsCode:
    """A pickle payload: unpickling it would create the file `path` (what a malicious checkpoint could do)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("name", ["scheduler.pt", "rng_state_0.pth", "optimizer/.metadata"])
def test_resume_refuses_pickles_that_run_code(tiny_recipe, tmp_path, name):
    recipe = copy.deepcopy(tiny_recipe)
    recipe["training"]["max_steps"] = 3
    run_pretraining(recipe)
    marker = tmp_path / f"pwned-{name.replace('/', '-')}"
    target = tmp_path / "run" / "checkpoint-3" / "training_state" / name
    if name.endswith(".metadata"):  # DCP's index of the shards is a plain pickle
        target.write_bytes(pickle.dumps({"state": RunsCode(marker)}))
    else:
        torch.save({"state": RunsCode(marker)}, target)
    recipe["training"]["max_steps"] = 6
    with pytest.raises(RecipeError, match=rf"{name}: refusing to unpickle"):
        run_pretraining(recipe, resume=True)
    assert not marker.exists()


def test_resumed_metrics_read_like_the_straight_run(tiny_recipe, tmp_path):
    """After --resume, metrics.jsonl holds each step once and the loss averaged over a logging window that spans the
    checkpoint equals the uninterrupted run's (the window is saved in the checkpoint and restored)."""
    straight = copy.deepcopy(tiny_recipe)
    straight["training"].update(output_dir=str(tmp_path / "straight"), logging_steps=2)
    expected = read_metrics(run_pretraining(straight).metrics_path)

    interrupted = copy.deepcopy(tiny_recipe)
    interrupted["training"].update(output_dir=str(tmp_path / "interrupted"), logging_steps=2)
    with pytest.raises(Crash):  # checkpoint 3 holds the window open since step 2; step 4 was logged before the crash
        run_pretraining(interrupted, extra_callbacks=[CrashAtStep(4)])
    resumed = read_metrics(run_pretraining(interrupted, resume=True).metrics_path)
    steps = [r["step"] for r in resumed if "loss" in r]
    assert steps == [r["step"] for r in expected if "loss" in r] == [2, 4, 6]
    for got, want in zip([r for r in resumed if "loss" in r], [r for r in expected if "loss" in r], strict=True):
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-4), got["step"]


def test_a_checkpoint_of_the_earlier_layout_is_named_with_what_to_do(tiny_recipe, tmp_path):
    """Before this version, resume files sat beside the weights (optimizer.pt, ...); they do not resume now."""
    import shutil

    recipe = copy.deepcopy(tiny_recipe)
    recipe["training"]["max_steps"] = 3
    result = run_pretraining(recipe)
    shutil.rmtree(result.final_checkpoint / "training_state")
    torch.save({"state": {}}, result.final_checkpoint / "optimizer.pt")
    recipe["training"]["max_steps"] = 6
    with pytest.raises(RecipeError, match="earlier version of hf_smallllm.*model.init_from"):
        run_pretraining(recipe, resume=True)
