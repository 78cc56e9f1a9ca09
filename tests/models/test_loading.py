"""Saving and loading: package checkpoints through the Auto classes, the Llama layout that TinyLlama, ChuXin and
Skywork publish, and the official BTLM and GEB layouts (converted on load, saved back in the package layout)."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from hf_smallllm import FAMILIES, BTLMForCausalLM, GEBForCausalLM

from .helpers import ALL_FAMILIES, LLAMA_SHAPED, llama_reference, random_ids, tiny_model


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_save_and_auto_load_round_trip(family, tmp_path):
    model = tiny_model(family)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == f"smallllm_{family}"
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is FAMILIES[family].causal_lm_class
    volatile = {"_name_or_path", "architectures", "transformers_version"}
    saved = {k: v for k, v in model.config.to_dict().items() if k not in volatile}
    assert {k: v for k, v in reloaded.config.to_dict().items() if k not in volatile} == saved
    base = AutoModel.from_pretrained(tmp_path)
    assert type(base) is FAMILIES[family].model_class
    ids = random_ids(model.config.vocab_size, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, atol=0, rtol=0)


@pytest.mark.parametrize("family", LLAMA_SHAPED)
def test_llama_layout_checkpoint_loads_directly(family, tmp_path):
    """What TinyLlama, ChuXin and Skywork publish is LlamaForCausalLM's layout: it loads with from_pretrained."""
    model = tiny_model(family)
    llama = llama_reference(model)
    llama.save_pretrained(tmp_path)
    loaded = FAMILIES[family].causal_lm_class.from_pretrained(tmp_path).eval()
    ids = random_ids(model.config.vocab_size, (1, 13))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, llama(ids).logits, atol=1e-5, rtol=1e-5)


def test_btlm_official_layout_saves_as_package_layout(fixtures_dir, tmp_path):
    official = BTLMForCausalLM.from_pretrained(fixtures_dir / "btlm-tiny").eval()
    official.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert "model.layers.0.self_attn.q_proj.weight" in saved
    assert not any(key.startswith("transformer.") for key in saved)
    assert saved["model.layers.0.mlp.gate_proj.weight"].shape == (170, 64)  # nn.Linear [out, in]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    expected = load_file(fixtures_dir / "btlm-tiny" / "expected_logits.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(expected["input_ids"]).logits, expected["logits"], atol=1e-4, rtol=0)


def write_official_geb_folder(model, folder):
    """Write `model` in GEB's published layout: ChatGLM3 module tree, fused key_value and dense_h_to_4h, ChatGLM
    config names, the remote-code auto_map and the rotary buffer that ChatGLM checkpoints carry."""
    c = model.config
    state = model.state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    official = {
        "transformer.embedding.word_embeddings.weight": state["model.embed_tokens.weight"],
        "transformer.encoder.final_layernorm.weight": state["model.norm.weight"],
        "transformer.output_layer.weight": state["lm_head.weight"],
        "transformer.rotary_pos_emb.inv_freq": torch.ones(c.rotary_dim // 2),
    }
    for i in range(c.num_hidden_layers):
        ours, theirs = f"model.layers.{i}.", f"transformer.encoder.layers.{i}."
        official[theirs + "input_layernorm.weight"] = state[ours + "input_layernorm.weight"]
        official[theirs + "post_attention_layernorm.weight"] = state[ours + "post_attention_layernorm.weight"]
        official[theirs + "self_attention.query.weight"] = state[ours + "self_attn.q_proj.weight"]
        official[theirs + "self_attention.key_value.weight"] = torch.cat(
            [state[ours + "self_attn.k_proj.weight"], state[ours + "self_attn.v_proj.weight"]])
        official[theirs + "self_attention.dense.weight"] = state[ours + "self_attn.o_proj.weight"]
        official[theirs + "mlp.dense_h_to_4h.weight"] = torch.cat(
            [state[ours + "mlp.gate_proj.weight"], state[ours + "mlp.up_proj.weight"]])
        official[theirs + "mlp.dense_4h_to_h.weight"] = state[ours + "mlp.down_proj.weight"]
    save_file({k: v.contiguous() for k, v in official.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    config = {
        "model_type": "geblm", "architectures": ["GEBForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_geblm.GEBConfig", "AutoModel": "modeling_geb.GEBForCausalLM"},
        "num_layers": c.num_hidden_layers, "padded_vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
        "ffn_hidden_size": c.intermediate_size, "kv_channels": c.head_dim, "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads, "seq_length": c.max_position_embeddings,
        "max_position_embeddings": c.max_position_embeddings, "layernorm_epsilon": c.norm_eps,
        "hidden_dropout": 0.0, "attention_dropout": 0.0, "bias_dropout_fusion": True, "use_cache": True,
        "apply_residual_connection_post_layernorm": False, "post_layer_norm": True, "add_bias_linear": False,
        "use_flash_attn": False, "apply_query_key_layer_scaling": False, "attention_softmax_in_fp32": False,
        "fp32_residual_connection": False, "pre_seq_len": None, "prefix_projection": False,
        "tie_word_embeddings": False, "torch_dtype": "float32",
    }
    (folder / "config.json").write_text(json.dumps(config))


def test_geb_official_layout_loads_and_matches(tmp_path):
    model = tiny_model("geb")
    write_official_geb_folder(model, tmp_path / "official")
    loaded = GEBForCausalLM.from_pretrained(tmp_path / "official").eval()
    assert loaded.config.to_dict()["rope_parameters"]["partial_rotary_factor"] == 0.5
    assert loaded.config.rope_layout == "interleaved"
    ids = random_ids(model.config.vocab_size, (2, 15))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)
    loaded.save_pretrained(tmp_path / "ours")
    assert "model.layers.1.self_attn.k_proj.weight" in load_file(tmp_path / "ours" / "model.safetensors")
    assert AutoConfig.from_pretrained(tmp_path / "ours").model_type == "smallllm_geb"


def test_official_btlm_folder_loads_through_the_auto_classes(fixtures_dir):
    """An official BTLM folder (model_type "btlm", Cerebras' auto_map) loads into the package's classes through the
    Auto classes, to the golden logits, whatever trust_remote_code says (the folder has no code to run)."""
    expected = load_file(fixtures_dir / "btlm-tiny" / "expected_logits.safetensors")
    for kwargs in ({}, {"trust_remote_code": False}, {"trust_remote_code": True}):
        assert type(AutoConfig.from_pretrained(fixtures_dir / "btlm-tiny", **kwargs)).__name__ == "BTLMConfig"
        model = AutoModelForCausalLM.from_pretrained(fixtures_dir / "btlm-tiny", **kwargs).eval()
        assert type(model) is BTLMForCausalLM
        with torch.no_grad():
            torch.testing.assert_close(model(expected["input_ids"]).logits, expected["logits"], atol=1e-4, rtol=0)
