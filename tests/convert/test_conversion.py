"""Conversions in and out of the package format: exact round trips per family, the BTLM golden logits through the
official layout, lit-gpt training checkpoints, native Llama/GLM exports loadable by stock transformers, config
translation, and errors that list every problem and leave nothing written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_smallllm import preset_config
from hf_smallllm.convert import (
    CheckpointMismatchError,
    InexpressibleConfigError,
    litgpt_to_package,
    official_to_package,
    package_to_native,
    package_to_official,
)
from hf_smallllm.convert.formats import OFFICIAL_FORMATS
from hf_smallllm.families import FAMILIES
from hf_smallllm_cli import main

FAMILY_NAMES = list(FAMILIES)
OFFICIAL_MODEL_TYPES = {"tinyllama": "llama", "chuxin": "llama", "skywork": "skywork", "btlm": "btlm", "geb": "geblm"}


def tensors(folder) -> dict:
    out = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        out.update(load_file(str(path)))
    return out


def tiny_checkpoint(family, folder, **overrides):
    torch.manual_seed(0)
    model = FAMILIES[family].causal_lm_class(preset_config(family, "tiny", **overrides)).eval()
    model.save_pretrained(folder)
    return model


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_package_official_package_round_trip_is_exact(family, tmp_path):
    tiny_checkpoint(family, tmp_path / "package")
    out = package_to_official(tmp_path / "package", tmp_path / "official", progress=False)
    assert out.check is not None and out.check.max_abs_diff <= 1e-4
    official = json.loads((tmp_path / "official" / "config.json").read_text())
    # the published model_type of the five; a family added later writes its layout's first
    expected = OFFICIAL_MODEL_TYPES.get(family) or OFFICIAL_FORMATS[family].model_types[0]
    assert official["model_type"] == expected
    back = official_to_package(tmp_path / "official", tmp_path / "back", family=family, progress=False)
    assert back.check.max_abs_diff <= 1e-4
    original, returned = tensors(tmp_path / "package"), tensors(tmp_path / "back")
    assert original.keys() == returned.keys()
    for name in original:
        assert torch.equal(original[name], returned[name]), name
    a = json.loads((tmp_path / "package" / "config.json").read_text())
    b = json.loads((tmp_path / "back" / "config.json").read_text())
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size",
                "intermediate_size", "position_embedding_type", "rope_layout", "norm_type", "tie_word_embeddings"):
        assert a.get(key) == b.get(key), key


def test_btlm_official_layout_reproduces_the_golden_logits(fixtures_dir, tmp_path):
    report = official_to_package(fixtures_dir / "btlm-tiny", tmp_path / "btlm", progress=False)
    assert report.family == "btlm" and report.check.max_abs_diff <= 1e-4
    golden = load_file(str(fixtures_dir / "btlm-tiny" / "expected_logits.safetensors"))
    model = FAMILIES["btlm"].causal_lm_class.from_pretrained(tmp_path / "btlm").eval()
    ids_key = next(k for k in golden if "ids" in k)
    logits_key = next(k for k in golden if "logits" in k)
    torch.testing.assert_close(logits(model, golden[ids_key].long()), golden[logits_key], rtol=0, atol=1e-5)


def litgpt_state_dict(model) -> dict:
    """lit-gpt's layout written independently of the package: per key/value group its query heads, one key head,
    one value head, fused into `attn.attn`."""
    config = model.config
    groups, head_dim = config.num_key_value_heads, config.head_dim
    per_group = config.num_attention_heads // groups
    state = model.state_dict()
    out = {"transformer.wte.weight": state["model.embed_tokens.weight"],
           "transformer.ln_f.weight": state["model.norm.weight"], "lm_head.weight": state["lm_head.weight"]}
    for i in range(config.num_hidden_layers):
        p, lit = f"model.layers.{i}.", f"transformer.h.{i}."
        q = state[p + "self_attn.q_proj.weight"].view(config.num_attention_heads, head_dim, -1)
        k = state[p + "self_attn.k_proj.weight"].view(groups, head_dim, -1)
        v = state[p + "self_attn.v_proj.weight"].view(groups, head_dim, -1)
        fused = [torch.cat([q[g * per_group:(g + 1) * per_group].flatten(0, 1), k[g], v[g]]) for g in range(groups)]
        out[lit + "attn.attn.weight"] = torch.cat(fused)
        out[lit + "attn.proj.weight"] = state[p + "self_attn.o_proj.weight"]
        out[lit + "norm_1.weight"] = state[p + "input_layernorm.weight"]
        out[lit + "norm_2.weight"] = state[p + "post_attention_layernorm.weight"]
        out[lit + "mlp.swiglu.w1.weight"] = state[p + "mlp.gate_proj.weight"]
        out[lit + "mlp.swiglu.w2.weight"] = state[p + "mlp.up_proj.weight"]
        out[lit + "mlp.swiglu.w3.weight"] = state[p + "mlp.down_proj.weight"]
    return {k: v.clone() for k, v in out.items()}


def test_litgpt_training_checkpoint_converts(tmp_path):
    model = tiny_checkpoint("tinyllama", tmp_path / "reference")
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # grouped QKV matters
    checkpoint = tmp_path / "iter-000100-ckpt.pth"
    torch.save({"model": litgpt_state_dict(model), "iter_num": 100, "step_count": 25}, checkpoint)
    report = litgpt_to_package(checkpoint, tmp_path / "converted", config=tmp_path / "reference", progress=False)
    assert report.check.max_abs_diff <= 1e-4
    converted = FAMILIES["tinyllama"].causal_lm_class.from_pretrained(tmp_path / "converted").eval()
    ids = torch.randint(3, model.config.vocab_size, (2, 16))
    torch.testing.assert_close(logits(converted, ids), logits(model, ids), rtol=0, atol=1e-6)


NATIVE_CHECK = """
import json, sys, torch
from transformers import AutoModelForCausalLM
sys.modules["hf_smallllm"] = None  # stock transformers only
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = torch.tensor(json.loads(sys.argv[2]))
with torch.no_grad():
    torch.save({"logits": model(ids).logits, "class": type(model).__name__}, sys.argv[3])
"""


@pytest.mark.parametrize("family,native_class", [("tinyllama", "LlamaForCausalLM"), ("geb", "GlmForCausalLM"),
                                                 ("skywork", "LlamaForCausalLM")])
def test_native_export_loads_in_stock_transformers(family, native_class, tmp_path):
    model = tiny_checkpoint(family, tmp_path / "package")
    package_to_native(tmp_path / "package", tmp_path / "native", progress=False)
    ids = torch.randint(3, model.config.vocab_size, (1, 12))
    done = subprocess.run([sys.executable, "-c", NATIVE_CHECK, str(tmp_path / "native"), json.dumps(ids.tolist()),
                           str(tmp_path / "out.pt")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = torch.load(tmp_path / "out.pt")
    assert result["class"] == native_class
    torch.testing.assert_close(result["logits"], logits(model, ids), rtol=0, atol=1e-5)


def test_alibi_cannot_become_llama(tmp_path):
    tiny_checkpoint("btlm", tmp_path / "btlm")
    with pytest.raises(InexpressibleConfigError, match="alibi|ALiBi"):
        package_to_native(tmp_path / "btlm", tmp_path / "native", progress=False)
    assert not (tmp_path / "native").exists()


def test_chuxin_special_ids_come_from_the_tokenizer_files(tmp_path):
    tiny_checkpoint("chuxin", tmp_path / "package", vocab_size=300, bos_token_id=1, eos_token_id=2)
    package_to_official(tmp_path / "package", tmp_path / "official", progress=False)
    config_path = tmp_path / "official" / "config.json"
    official = json.loads(config_path.read_text())
    official.update(bos_token_id=1, eos_token_id=2)  # what ChuXin's published config.json says
    config_path.write_text(json.dumps(official))
    (tmp_path / "official" / "generation_config.json").write_text(json.dumps({"bos_token_id": 256,
                                                                              "eos_token_id": 257,
                                                                              "pad_token_id": 257}))
    report = official_to_package(tmp_path / "official", tmp_path / "back", family="chuxin", progress=False)
    converted = json.loads((tmp_path / "back" / "config.json").read_text())
    assert (converted["bos_token_id"], converted["eos_token_id"]) == (256, 257)
    assert any("257" in note or "eos" in note.lower() for note in report.notes)


def test_mismatched_checkpoints_list_every_problem_and_write_nothing(tmp_path):
    tiny_checkpoint("tinyllama", tmp_path / "package")
    package_to_official(tmp_path / "package", tmp_path / "official", progress=False)
    state = tensors(tmp_path / "official")
    state.pop("model.layers.1.mlp.up_proj.weight")
    state["model.layers.0.self_attn.q_proj.weight"] = state["model.layers.0.self_attn.q_proj.weight"][:, :32].clone()
    state["model.layers.0.extra.weight"] = torch.zeros(2)
    for path in (tmp_path / "official").glob("*.safetensors"):
        path.unlink()
    save_file(state, str(tmp_path / "official" / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError) as error:
        official_to_package(tmp_path / "official", tmp_path / "out", family="tinyllama", progress=False)
    message = str(error.value)
    for name in ("model.layers.1.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.weight",
                 "model.layers.0.extra.weight"):
        assert name in message
    assert not (tmp_path / "out").exists()


def test_existing_output_is_kept_unless_overwrite(tmp_path, capsys):
    tiny_checkpoint("skywork", tmp_path / "package")
    (tmp_path / "official").mkdir()
    (tmp_path / "official" / "keep.txt").write_text("earlier output")
    assert main(["convert", "package-to-official", str(tmp_path / "package"), str(tmp_path / "official"),
                 "--no-progress"]) == 2
    assert "official" in capsys.readouterr().err
    assert (tmp_path / "official" / "keep.txt").exists()
    assert main(["convert", "package-to-official", str(tmp_path / "package"), str(tmp_path / "official"),
                 "--no-progress", "--overwrite", "--json", str(tmp_path / "report.json")]) == 0
    assert "max |logit" in capsys.readouterr().out
    assert not (tmp_path / "official" / "keep.txt").exists()
    assert json.loads((tmp_path / "report.json").read_text())["max_abs_logit_diff"] <= 1e-4


def test_ambiguous_llama_layout_needs_a_family(tmp_path, capsys):
    tiny_checkpoint("tinyllama", tmp_path / "package")
    package_to_official(tmp_path / "package", tmp_path / "official", progress=False)
    assert main(["convert", "official-to-package", str(tmp_path / "official"), str(tmp_path / "out")]) == 2
    assert "--family" in capsys.readouterr().err


def test_conversion_scripts_are_thin_fronts():
    root = Path(__file__).parents[2]
    for script, direction in (("official_to_package", "official-to-package"), ("package_to_official",
                              "package-to-official"), ("litgpt_to_package", "litgpt"), ("export_native", "to-native")):
        assert f'main(["convert", "{direction}", *sys.argv[1:]])' in (root / "conversion" / f"{script}.py").read_text()
    done = subprocess.run([sys.executable, str(root / "conversion" / "litgpt_to_package.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--tolerance" in done.stdout and "--preset" in done.stdout
