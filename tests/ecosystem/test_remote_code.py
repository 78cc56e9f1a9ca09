"""Every folder the package writes loads where hf_smallllm cannot be imported (remote code + auto_map), with the
same logits as in-process; with the package imported its own classes load it, trust_remote_code or not."""

import json
from pathlib import Path

import pytest
import torch

from .conftest import FIXTURES_BTLM, pretrain_recipe, run_python

IDS = [[5, 17, 99, 3, 25, 42, 7]]  # below every vocabulary size here (the BTLM fixture has 128)

LOAD_ALL = """
import json, torch
from transformers import AutoModelForCausalLM
out = {}
for name, folder in FOLDERS.items():
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=TRUST).eval()
    with torch.no_grad():
        logits = model(torch.tensor(IDS)).logits[0, -1]
    out[name] = {"module": type(model).__module__, "logits": logits.tolist()}
"""

PIPELINE_AND_PEFT = """
from transformers import pipeline
generator = pipeline("text-generation", model=FOLDERS["checkpoint"], trust_remote_code=True)
text = generator("In the beginning", max_new_tokens=6, do_sample=False)[0]["generated_text"]
out["pipeline"] = text
# peft is imported only now: the remote code registered its default targets for when it loads
from peft import LoraConfig, get_peft_model
peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM"))
out["lora"] = sorted({n.rsplit(".", 2)[-2] for n, _ in peft_model.named_modules() if n.endswith(".lora_A")})
"""


def _folders(tmp_path_factory, tokenizer_dir) -> dict[str, Path]:
    from hf_smallllm.convert.converter import official_to_package
    from hf_smallllm.sft import run_sft
    from hf_smallllm.train.api import run_pretraining

    root = tmp_path_factory.mktemp("written")
    checkpoint = run_pretraining(pretrain_recipe(tokenizer_dir, root / "pretrain", "btlm")).final_checkpoint
    sft = run_sft({"model": {"family": "geb", "preset": "tiny"}, "tokenizer": str(tokenizer_dir),
                   "data": {"sources": [{"name": "bundled", "path": "bundled:instructions.jsonl", "limit": 16}],
                            "max_length": 128},
                   "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
                   "training": {"output_dir": str(root / "sft"), "max_steps": 2, "per_device_batch_size": 4,
                                "save_steps": 2, "logging_steps": 1, "progress_bar": False}})
    converted = root / "converted"
    official_to_package(FIXTURES_BTLM, converted, progress=False)
    return {"checkpoint": checkpoint, "merged": sft.merged_dir, "converted": converted}


@pytest.mark.slow
def test_written_folders_load_without_the_package(tmp_path_factory, tokenizer_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    folders = _folders(tmp_path_factory, tokenizer_dir)
    for folder in folders.values():
        config = json.loads((folder / "config.json").read_text())
        assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM"}, folder
        for reference in config["auto_map"].values():
            assert (folder / f"{reference.split('.')[0]}.py").is_file()
    expected = {}
    for name, folder in folders.items():
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        assert type(model).__module__.startswith("hf_smallllm.models.")
        with torch.no_grad():
            expected[name] = model(torch.tensor(IDS)).logits[0, -1]

    settings = f"FOLDERS = {json.dumps({k: str(v) for k, v in folders.items()})}\nIDS = {IDS}\nTRUST = True\n"
    remote = run_python(settings + LOAD_ALL + PIPELINE_AND_PEFT + "print('RESULT ' + json.dumps(out))\n", tmp_path)
    for name in folders:
        assert remote[name]["module"].startswith("transformers_modules."), remote[name]["module"]
        torch.testing.assert_close(torch.tensor(remote[name]["logits"]), expected[name], rtol=1e-5, atol=1e-5)
    assert remote["pipeline"].startswith("In the beginning") and len(remote["pipeline"]) > len("In the beginning")
    assert remote["lora"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]

    # With the package imported, its registered classes load the folders even with trust_remote_code=True.
    local = run_python("import hf_smallllm\n" + settings + LOAD_ALL + "print('RESULT ' + json.dumps(out))\n",
                       tmp_path, blocked=False)
    for name in folders:
        assert local[name]["module"].startswith("hf_smallllm.models.modeling_"), local[name]["module"]
        torch.testing.assert_close(torch.tensor(local[name]["logits"]), expected[name], rtol=1e-5, atol=1e-5)
