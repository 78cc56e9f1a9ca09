"""muP initialisation: per-role standard deviations, truncation, every family, and checkpoints that reload intact."""

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_smallllm import FAMILIES, preset_config
from hf_smallllm.models.mup_smallllm import init_mup_weights, mup_init_std, truncated_normal_

# Standard deviation of a standard normal truncated at +-2: what a "std sigma, cut at 2 sigma" draw really has.
TRUNCATED_STD_FACTOR = 0.8796


def wide_btlm(**overrides):
    """A BTLM-shaped muP model wide enough for stable statistics: width 256 over base 32 (m = 8), MLP 680 over
    base 85 (m_ffn = 8), 2 layers; untied head unless overridden."""
    torch.manual_seed(0)
    config = preset_config("btlm", "tiny", hidden_size=256, intermediate_size=680, num_attention_heads=4,
                           mup_base_hidden_size=32.0, mup_base_intermediate_size=85.0, **overrides)
    return FAMILIES["btlm"].causal_lm_class(config)


def expected_std(config, module: str) -> float:
    sigma = config.initializer_range
    m, m_ffn, depth = config.mup_width_multiplier, config.mup_ffn_multiplier, 2 * config.num_hidden_layers
    return {
        "embed_tokens": sigma, "lm_head": sigma,
        "q_proj": sigma / math.sqrt(m), "k_proj": sigma / math.sqrt(m), "v_proj": sigma / math.sqrt(m),
        "gate_proj": sigma / math.sqrt(m), "up_proj": sigma / math.sqrt(m),
        "o_proj": sigma / math.sqrt(m) / math.sqrt(depth), "down_proj": sigma / math.sqrt(m_ffn) / math.sqrt(depth),
    }[module]


def test_btlm_published_init_stds_match_the_cerebras_recipe():
    config = FAMILIES["btlm"].config_class()
    # docs/architectures.md 1.4: 0.073, 0.073 / sqrt(10) = 0.02308, 0.073 / sqrt(10) / sqrt(64) = 0.002886
    assert mup_init_std(config, "model.embed_tokens") == pytest.approx(0.073)
    assert mup_init_std(config, "model.layers.0.self_attn.q_proj") == pytest.approx(0.02308, abs=1e-5)
    assert mup_init_std(config, "model.layers.0.mlp.gate_proj") == pytest.approx(0.02308, abs=1e-5)
    assert mup_init_std(config, "model.layers.0.self_attn.o_proj") == pytest.approx(0.002886, abs=1e-6)
    assert mup_init_std(config, "model.layers.0.mlp.down_proj") == pytest.approx(0.002886, abs=1e-6)


@pytest.mark.parametrize("tied", [True, False], ids=["tied-head", "untied-head"])
def test_every_matrix_gets_its_role_std_truncated_at_two_sigma(tied):
    model = wide_btlm(tie_word_embeddings=tied)
    config = model.config
    for name, param in model.named_parameters():
        module = name.split(".")[-2]
        if name.endswith(".bias"):
            assert torch.count_nonzero(param) == 0, name
        elif "norm" in module:
            assert torch.all(param == 1), name
        else:
            std = expected_std(config, module)
            assert param.abs().max() <= 2 * std * (1 + 1e-6), name
            assert param.std().item() == pytest.approx(std * TRUNCATED_STD_FACTOR, rel=0.05), name
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied


def test_models_without_mup_keep_the_transformers_default_init():
    torch.manual_seed(0)
    config = preset_config("tinyllama", "tiny", hidden_size=256, intermediate_size=688, initializer_range=0.02)
    model = FAMILIES["tinyllama"].causal_lm_class(config)
    for weight in (model.model.layers[0].self_attn.q_proj.weight, model.model.layers[1].mlp.down_proj.weight):
        assert weight.std().item() == pytest.approx(0.02, rel=0.05)  # plain normal: not scaled, not truncated
        assert weight.abs().max() > 2 * 0.02
    with pytest.raises(ValueError, match="mup_base_hidden_size"):
        init_mup_weights(model, model.model.embed_tokens)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_gets_mup_init_from_the_config_alone(family):
    torch.manual_seed(0)
    config = preset_config(family, "tiny", hidden_size=128, num_attention_heads=4, head_dim=32,
                           initializer_range=0.05, mup_base_hidden_size=32.0, mup_base_intermediate_size=43.0)
    model = FAMILIES[family].causal_lm_class(config)
    layer = model.model.layers[0]
    assert layer.self_attn.q_proj.weight.abs().max() <= 2 * 0.05 / 2 + 1e-7  # m = 4
    assert layer.mlp.down_proj.weight.abs().max() <= 2 * 0.05 / math.sqrt(config.mup_ffn_multiplier) / 2 + 1e-7
    assert layer.self_attn.q_proj.weight.std().item() == pytest.approx(0.025 * TRUNCATED_STD_FACTOR, rel=0.1)


def test_truncated_normal_leaves_loaded_tensors_alone():
    loaded = torch.full((100,), 7.0)
    loaded._is_hf_initialized = True
    truncated_normal_(loaded, 0.1)
    assert torch.all(loaded == 7.0)
    fresh = torch.full((100_000,), 7.0)
    truncated_normal_(fresh, 0.1)
    assert fresh.abs().max() <= 0.2 and fresh.std().item() == pytest.approx(0.1 * TRUNCATED_STD_FACTOR, rel=0.02)


def test_mup_checkpoint_reloads_with_identical_logits(tmp_path):
    model = wide_btlm().eval()
    model.save_pretrained(tmp_path)
    reloaded = FAMILIES["btlm"].causal_lm_class.from_pretrained(tmp_path).eval()
    assert reloaded.config.uses_mup and reloaded.config.mup_width_multiplier == 8.0
    ids = torch.randint(3, 256, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_weights_missing_from_a_checkpoint_get_the_mup_init(tmp_path):
    model = wide_btlm()
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    missing = "model.layers.1.self_attn.o_proj.weight"
    del state[missing]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    reloaded = FAMILIES["btlm"].causal_lm_class.from_pretrained(tmp_path)
    weight = reloaded.get_parameter(missing)
    std = expected_std(reloaded.config, "o_proj")
    assert not torch.equal(weight, model.get_parameter(missing))
    assert weight.abs().max() <= 2 * std * (1 + 1e-6)
    assert weight.std().item() == pytest.approx(std * TRUNCATED_STD_FACTOR, rel=0.05)
    for name, param in reloaded.named_parameters():  # everything that was in the file is untouched
        if name != missing:
            torch.testing.assert_close(param, model.get_parameter(name), rtol=0, atol=0)
