"""`hf-smallllm sft dpo` / `run_dpo`: preference pairs checked and reported, DPO on TRL with LoRA (reference: the
adapters disabled) and without (reference: an explicit model), the loss falls from log 2, and the merged output is a
package folder with remote code."""

import json

import pytest

from hf_smallllm.runfiles import read_metrics
from hf_smallllm.sft import SampleError, run_dpo, to_preference
from hf_smallllm.sft.records import RESOURCES

PAIR = {"prompt": "What is 2 plus 3?", "chosen": "5.", "rejected": "6."}


def test_preference_records_are_checked():
    pair = to_preference(PAIR)
    assert pair["prompt"] == [{"role": "user", "content": "What is 2 plus 3?"}]
    assert pair["chosen"] == [{"role": "assistant", "content": "5."}]
    bad = {
        "malformed": {"prompt": "q", "chosen": "a"},
        "same_answer": {**PAIR, "rejected": "5."},
        "empty_assistant": {**PAIR, "chosen": " "},
    }
    for reason, record in bad.items():
        with pytest.raises(SampleError) as err:
            to_preference(record)
        assert err.value.reason == reason
    with pytest.raises(SampleError, match="end with a user turn"):
        to_preference({**PAIR, "prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    lines = (RESOURCES / "preferences.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 240 and all(to_preference(json.loads(line)) for line in lines)


def _recipe(init_from, output_dir, **sections):
    recipe = {
        "model": {"init_from": str(init_from)},
        "data": {"sources": [{"name": "prefs", "path": "bundled:preferences.jsonl", "limit": 32}], "max_length": 128},
        "lora": {"r": 8, "alpha": 32, "dropout": 0.0},
        "optimizer": {"lr": 1e-2, "weight_decay": 0.0},
        "schedule": {"type": "constant"},
        "dpo": {"beta": 0.5},
        "training": {"output_dir": str(output_dir), "max_steps": 6, "per_device_batch_size": 8,
                     "logging_steps": 1, "save_steps": 6, "progress_bar": False},
    }
    for name, values in sections.items():
        recipe[name] = {**recipe.get(name, {}), **values}
    return recipe


def _losses(result):
    return [r["loss"] for r in read_metrics(result.metrics_path) if "loss" in r]


@pytest.mark.slow
def test_dpo_with_lora_and_with_an_explicit_reference(tiny_checkpoint, tmp_path):
    base = tiny_checkpoint("geb")  # GEB's chat format adds its tokens, so the embedding grows
    result = run_dpo(_recipe(base, tmp_path / "lora"))
    losses = _losses(result)
    assert len(losses) == 6 and abs(losses[0] - 0.6931) < 1e-3 and sum(losses[-2:]) / 2 < losses[0] - 0.02, losses
    assert result.report.kept >= 28 and result.chat_format == "geb"
    config = json.loads((result.merged_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_geb.GEBForCausalLM"
    assert (result.merged_dir / "modeling_geb.py").is_file() and (tmp_path / "lora" / "dpo_recipe.yaml").is_file()

    # full DPO from the merged model, the same folder as an explicit reference (CLI, one-line summary)
    from hf_smallllm.cli import main

    recipe = tmp_path / "full.json"
    recipe.write_text(json.dumps(_recipe(result.merged_dir, tmp_path / "full", lora={"enabled": False},
                                         optimizer={"lr": 2e-3})))
    assert main(["sft", "dpo", "--recipe", str(recipe), "--ref-model", str(result.merged_dir)]) == 0
    full = read_metrics(tmp_path / "full" / "metrics.jsonl")
    losses = [r["loss"] for r in full if "loss" in r]
    assert abs(losses[0] - 0.6931) < 1e-3 and sum(losses[-2:]) / 2 < losses[0] - 0.02, losses
    assert (tmp_path / "full" / "checkpoint-6" / "model.safetensors").is_file()
