"""Configs: published defaults, official spellings, Auto registration, and clear errors for bad values."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

from hf_smallllm import FAMILIES, PRESETS, BTLMConfig, GEBConfig, SmallLLMConfig, TinyLlamaConfig, preset_config

# (layers, hidden, heads, kv heads, head dim, MLP, vocab, context, tied) and the published size in billions
PUBLISHED = {
    "tinyllama": ((22, 2048, 32, 4, 64, 5632, 32000, 2048, False), 1.100),
    "geb": ((24, 2048, 16, 4, 128, 5632, 64896, 4096, False), 1.35),
    "chuxin": ((24, 2048, 32, 32, 64, 5632, 102400, 4096, False), 1.65),
    "btlm": ((32, 2560, 32, 32, 80, 6826, 50257, 8192, True), 2.65),
    "skywork": ((52, 4608, 36, 36, 128, 12288, 65519, 4096, False), 13.85),
}


@pytest.mark.parametrize("family", list(PUBLISHED))
def test_defaults_are_the_published_model(family):
    config = FAMILIES[family].config_class()
    shape, billions = PUBLISHED[family]
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
            config.head_dim, config.intermediate_size, config.vocab_size, config.max_position_embeddings,
            config.tie_word_embeddings) == shape
    with torch.device("meta"):  # count parameters without allocating 13B of them
        model = FAMILIES[family].causal_lm_class(config)
    assert model.num_parameters() / 1e9 == pytest.approx(billions, rel=0.01)


def test_family_specific_published_details():
    assert TinyLlamaConfig().norm_eps == 1e-5
    skywork = FAMILIES["skywork"].config_class()
    assert (skywork.norm_eps, skywork.initializer_range, skywork.pad_token_id) == (1e-6, 0.01, 0)
    chuxin = FAMILIES["chuxin"].config_class()
    assert (chuxin.bos_token_id, chuxin.eos_token_id) == (100000, 100001)  # the tokenizer's, not config.json's 1/2
    geb = GEBConfig()
    assert (geb.rotary_dim, geb.rope_layout, geb.norm_type) == (64, "interleaved", "rmsnorm")
    btlm = BTLMConfig()
    assert (btlm.norm_type, btlm.position_embedding_type, btlm.attention_bias, btlm.mlp_bias) == (
        "layernorm", "alibi", True, True)
    assert btlm.mup_width_multiplier == pytest.approx(10.0) and btlm.mup_ffn_multiplier == pytest.approx(10.0)
    assert btlm.output_logits_multiplier == pytest.approx(0.222) and btlm.attention_scaling == pytest.approx(1 / 80)
    assert btlm.rope_parameters is None


def test_model_types_are_prefixed_and_registered():
    for family in FAMILIES.values():
        model_type = family.config_class.model_type
        assert model_type.startswith("smallllm_")
        assert model_type not in CONFIG_MAPPING_NAMES  # never shadows a type built into transformers
        assert type(AutoConfig.for_model(model_type)) is family.config_class
        tiny = preset_config(family.name, "tiny")
        assert type(AutoModelForCausalLM.from_config(tiny)) is family.causal_lm_class


@pytest.mark.parametrize("family", list(PRESETS))
def test_tiny_presets_are_small(family):
    config = preset_config(family, "tiny")
    assert (config.hidden_size, config.num_hidden_layers) == (64, 2)


def test_unknown_family_and_preset():
    with pytest.raises(ValueError, match="unknown family 'llama3'"):
        preset_config("llama3")
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset_config("btlm", "huge")


BTLM_CURRENT = {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_inner": 170, "n_positions": 256, "vocab_size": 128,
                "layer_norm_epsilon": 1e-5, "activation_function": "swiglu", "position_embedding_type": "alibi",
                "mup_embeddings_scale": 14.6, "mup_output_alpha": 2.22, "mup_width_scale": 0.1,
                "mup_scale_qk_dot_by_d": True, "bos_token_id": 127, "eos_token_id": 127}  # ids inside the tiny vocab
BTLM_LEGACY = {**{k: v for k, v in BTLM_CURRENT.items() if not k.startswith("mup_")},
               "embeddings_scale": 14.6, "output_logits_scale": 0.222, "width_scale": 0.1, "scale_qk_dot_by_d": True}


@pytest.mark.parametrize("spelling", [BTLM_CURRENT, BTLM_LEGACY], ids=["current", "legacy"])
def test_btlm_reads_both_published_spellings(spelling):
    config = BTLMConfig(**spelling)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 4)
    assert (config.intermediate_size, config.max_position_embeddings) == (170, 256)
    assert config.n_embd == 64 and config.n_layer == 2  # GPT-2 names stay readable
    assert config.mup_base_hidden_size == pytest.approx(6.4)  # derived: n_embd x width scale
    assert config.mup_width_multiplier == pytest.approx(10.0)
    assert config.mup_output_alpha == pytest.approx(2.22)
    assert config.output_logits_multiplier == pytest.approx(0.222)
    assert config.mup_embeddings_scale == 14.6 and config.mup_scale_qk_dot_by_d


def test_config_round_trips_through_json(tmp_path):
    for family in FAMILIES:
        config = preset_config(family, "tiny", rope_theta=50000.0) if family != "btlm" else preset_config(
            family, "tiny", alibi_scaling={"type": "linear", "train_seq_len": 128})
        config.save_pretrained(tmp_path / family)
        stored = json.loads((tmp_path / family / "config.json").read_text())
        # the config's own remote code (families.register() registers every family for AutoConfig)
        module = type(config).__module__.rsplit(".", 1)[-1]
        assert stored["auto_map"] == {"AutoConfig": f"{module}.{type(config).__name__}"}
        reloaded = AutoConfig.from_pretrained(tmp_path / family)
        assert type(reloaded) is type(config)
        assert reloaded.rope_parameters == config.rope_parameters
        assert reloaded.alibi_scaling == config.alibi_scaling
        assert reloaded.rotary_dim == config.rotary_dim


BAD_CONFIGS = [
    ("heads-not-dividing-hidden", dict(hidden_size=65, num_attention_heads=4), "not divisible by num_attention_heads"),
    ("kv-not-dividing-heads", dict(num_attention_heads=4, num_key_value_heads=3), "num_key_value_heads=3"),
    ("unknown-position-type", dict(position_embedding_type="learned"), "position_embedding_type='learned'"),
    ("alibi-with-rope-scaling", dict(position_embedding_type="alibi",
                                     rope_parameters={"rope_type": "linear", "factor": 2.0}), "RoPE settings"),
    ("alibi-scaling-on-rope", dict(alibi_scaling={"type": "linear", "factor": 2.0}), "only valid with"),
    ("alibi-scaling-both-fields",
     dict(position_embedding_type="alibi", alibi_scaling={"type": "linear", "factor": 2.0, "train_seq_len": 8}),
     "two fields"),
    ("alibi-scaling-factor-1", dict(position_embedding_type="alibi",
                                    alibi_scaling={"type": "linear", "factor": 1.0}), "greater than 1"),
    ("unknown-norm", dict(norm_type="batchnorm"), "norm_type='batchnorm'"),
    ("unknown-activation", dict(hidden_act="swish2"), "hidden_act='swish2'"),
    ("unknown-rope-layout", dict(rope_layout="zigzag"), "rope_layout='zigzag'"),
    ("partial-rotary-above-1", dict(partial_rotary_factor=1.5), "partial_rotary_factor=1.5"),
    ("odd-rotary-dim", dict(hidden_size=64, num_attention_heads=4, partial_rotary_factor=0.1875), "must be even"),
    ("zero-layers", dict(num_hidden_layers=0), "num_hidden_layers=0"),
    ("mup-alpha-without-base", dict(mup_output_alpha=2.0), "needs mup_base_hidden_size"),
    ("rope-scaling-missing-factor", dict(rope_parameters={"rope_type": "linear"}), "invalid rope_parameters"),
]


@pytest.mark.parametrize("overrides,message", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_configs_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        SmallLLMConfig(**overrides)


def test_official_config_flags_we_do_not_implement_are_rejected():
    with pytest.raises(ValueError, match="activation_function='gelu'"):
        BTLMConfig(activation_function="gelu")
    with pytest.raises(ValueError, match="apply_residual_connection_post_layernorm"):
        GEBConfig(apply_residual_connection_post_layernorm=True)
