"""Initialisation schemes: the std of the drawn weights under `init_scheme="lit_gpt"` (TinyLlama's lit-gpt init) and
the default N(0, initializer_range), their interplay with muP, checkpoint loading and the meta device."""

import math

import pytest
import torch
from accelerate import init_empty_weights

from hf_smallllm import FAMILIES, preset_config
from hf_smallllm.models.init_smallllm import lit_gpt_init_std

D, L = 256, 4  # wide enough for ~1% std estimates, deep enough that 1 / (sqrt(d) L) differs from sqrt(2 / (5 d))


def build(family="tinyllama", **overrides):
    torch.manual_seed(0)
    config = preset_config(family, "tiny", hidden_size=D, intermediate_size=512, num_hidden_layers=L,
                           num_attention_heads=4, vocab_size=2000, **overrides)
    return FAMILIES[family].causal_lm_class(config)


def stds(model) -> dict[str, float]:
    """Std of each weight matrix, keyed by role (q_proj, o_proj, embed_tokens, lm_head, ...), pooled over layers."""
    pooled = {}
    for name, param in model.named_parameters():
        if param.ndim == 2:
            role = name.rsplit(".", 2)[-2]
            pooled.setdefault(role, []).append(param.detach().flatten())
    return {role: torch.cat(values).std().item() for role, values in pooled.items()}


def test_tinyllama_published_stds():
    # lit_gpt/model.py (GH:jzhang38/TinyLlama, 89c75f4): sqrt(2 / (5 * 2048)) and 1 / (sqrt(2048) * 22)
    config = FAMILIES["tinyllama"].config_class(init_scheme="lit_gpt")
    assert lit_gpt_init_std(config, "model.embed_tokens") == pytest.approx(0.013975, abs=1e-6)
    assert lit_gpt_init_std(config, "model.layers.0.self_attn.q_proj") == pytest.approx(0.013975, abs=1e-6)
    assert lit_gpt_init_std(config, "lm_head") == pytest.approx(0.013975, abs=1e-6)
    assert lit_gpt_init_std(config, "model.layers.5.self_attn.o_proj") == pytest.approx(0.0010044, abs=1e-7)
    assert lit_gpt_init_std(config, "model.layers.5.mlp.down_proj") == pytest.approx(0.0010044, abs=1e-7)


@pytest.mark.parametrize("family", ["tinyllama", "geb", "chuxin", "skywork"])
def test_lit_gpt_scheme_draws_the_lit_gpt_stds(family):
    measured = stds(build(family, init_scheme="lit_gpt"))
    general, residual = math.sqrt(2 / (5 * D)), 1 / (math.sqrt(D) * L)
    for role in ("embed_tokens", "q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "lm_head"):
        assert measured[role] == pytest.approx(general, rel=0.03), role
    for role in ("o_proj", "down_proj"):
        assert measured[role] == pytest.approx(residual, rel=0.03), role


def test_default_scheme_is_initializer_range_everywhere():
    measured = stds(build(initializer_range=0.02))
    for role, value in measured.items():
        assert value == pytest.approx(0.02, rel=0.03), role
    assert FAMILIES["tinyllama"].config_class().init_scheme == "normal"


def test_norms_and_biases_under_lit_gpt():
    model = build("tinyllama", init_scheme="lit_gpt", attention_bias=True, mlp_bias=True)
    assert all(torch.all(p == 0) for n, p in model.named_parameters() if n.endswith(".bias"))
    assert all(torch.all(p == 1) for n, p in model.named_parameters() if "norm" in n)


def test_lit_gpt_scheme_round_trips_in_config_and_leaves_loaded_weights_alone(tmp_path):
    model = build(init_scheme="lit_gpt")
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path)
    assert reloaded.config.init_scheme == "lit_gpt"
    for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_lit_gpt_scheme_builds_on_the_meta_device():
    config = preset_config("tinyllama", "tiny", init_scheme="lit_gpt")
    with init_empty_weights(include_buffers=False):
        model = FAMILIES["tinyllama"].causal_lm_class(config)
    assert model.model.layers[0].mlp.down_proj.weight.device.type == "meta"


@pytest.mark.parametrize("values, message", [
    ({"init_scheme": "xavier"}, "init_scheme='xavier' is not supported"),
    ({"init_scheme": "lit_gpt", "mup_base_hidden_size": 32.0}, "cannot be combined with muP"),
])
def test_bad_init_scheme_is_a_config_error(values, message):
    with pytest.raises(ValueError, match=message):
        preset_config("tinyllama", "tiny", **values)


def test_mup_models_keep_mup_init():
    """BTLM's muP init is untouched by the new field: embedding std = initializer_range (truncated at 2 sigma)."""
    model = build("btlm", mup_base_hidden_size=32.0, mup_base_intermediate_size=64.0, initializer_range=0.05)
    assert model.config.init_scheme == "normal"
    assert stds(model)["embed_tokens"] == pytest.approx(0.05 * 0.8796, rel=0.03)


@pytest.mark.parametrize("name", ["tiny-tinyllama", "published-tinyllama"])
def test_tinyllama_recipes_use_the_lit_gpt_init(name):
    from hf_smallllm.train.recipe import load_recipe

    assert load_recipe(name).model.config["init_scheme"] == "lit_gpt"


def test_recipe_built_tinyllama_draws_lit_gpt_stds():
    from hf_smallllm.train.build import build_model
    from hf_smallllm.train.recipe import load_recipe

    torch.manual_seed(0)
    model = build_model(load_recipe("tiny-tinyllama", ["model.config.num_hidden_layers=4"]))
    d, layers = model.config.hidden_size, model.config.num_hidden_layers
    measured = stds(model)
    assert measured["o_proj"] == pytest.approx(1 / (math.sqrt(d) * layers), rel=0.05)
    assert measured["q_proj"] == pytest.approx(math.sqrt(2 / (5 * d)), rel=0.05)
