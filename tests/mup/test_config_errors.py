"""muP fields are all-or-nothing: multipliers without a base width are rejected with a message naming the fix."""

import pytest

from hf_smallllm import FAMILIES, preset_config
from hf_smallllm.models.configuration_smallllm import SmallLLMConfig


@pytest.mark.parametrize("fields,named", [
    (dict(mup_embeddings_scale=14.6), "mup_embeddings_scale=14.6"),
    (dict(mup_scale_qk_dot_by_d=True), "mup_scale_qk_dot_by_d=True"),
    (dict(mup_output_alpha=2.22), "mup_output_alpha=2.22"),
    (dict(mup_base_intermediate_size=682.6), "mup_base_intermediate_size"),
], ids=["embeddings-scale", "qk-dot-by-d", "output-alpha", "base-ffn-only"])
@pytest.mark.parametrize("family", ["smallllm", "tinyllama", "geb"])
def test_mup_fields_without_base_width_are_rejected(family, fields, named):
    config_class = SmallLLMConfig if family == "smallllm" else FAMILIES[family].config_class
    with pytest.raises(ValueError, match=named.replace(".", r"\.")) as error:
        config_class(**fields)
    assert "mup_base_hidden_size" in str(error.value)


def test_btlm_without_mup_needs_every_multiplier_turned_off():
    with pytest.raises(ValueError, match="turn muP off completely"):
        preset_config("btlm", "tiny", mup_base_hidden_size=None, mup_base_intermediate_size=None)
    config = preset_config("btlm", "tiny", mup_base_hidden_size=None, mup_base_intermediate_size=None,
                           mup_embeddings_scale=1.0, mup_output_alpha=1.0, mup_scale_qk_dot_by_d=False)
    assert not config.uses_mup and config.output_logits_multiplier == 1.0
    assert config.mup_width_multiplier == 1.0 and config.attention_scaling == pytest.approx(config.head_dim ** -0.5)


def test_width_multipliers_are_derived_not_stored():
    config = preset_config("btlm", "tiny", hidden_size=128, intermediate_size=340)
    assert config.mup_width_multiplier == 4.0 and config.mup_ffn_multiplier == 4.0
    assert config.output_logits_multiplier == pytest.approx(2.22 / 4)
    assert "mup_width_multiplier" not in config.to_dict()
    # without a base MLP width the MLP multiplier follows the hidden one
    assert preset_config("btlm", "tiny", mup_base_intermediate_size=None).mup_ffn_multiplier == 2.0


def test_published_btlm_spellings_give_the_same_mup_model():
    current = FAMILIES["btlm"].config_class(mup_width_scale=0.1, mup_output_alpha=2.22, mup_embeddings_scale=14.6,
                                            mup_scale_qk_dot_by_d=True)
    legacy = FAMILIES["btlm"].config_class(width_scale=0.1, output_logits_scale=0.222, embeddings_scale=14.6,
                                           scale_qk_dot_by_d=True)
    for config in (current, legacy):
        assert config.mup_base_hidden_size == pytest.approx(256.0)
        assert config.mup_base_intermediate_size == pytest.approx(682.6)
        assert config.output_logits_multiplier == pytest.approx(0.222)
