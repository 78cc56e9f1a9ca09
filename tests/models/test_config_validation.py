"""Every config class rejects hostile or careless values with a ValueError naming the field, the value and what is
allowed (issue 22): negative or non-integer token ids (ids at or beyond vocab_size only warn, as transformers' own
contract allows: issue 31), non-bools, unknown RoPE types, non-positive scales, string
numbers, RoPE settings on ALiBi models. A seeded property test draws random field combinations: whatever is
accepted builds a model with finite logits, whatever is rejected names one of the fields that were set."""

import copy
import math
import random

import pytest
import torch

from hf_smallllm.families import FAMILIES

SMALL = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "max_position_embeddings": 128, "bos_token_id": 1, "eos_token_id": 2,
         "pad_token_id": None}
ROPE_FAMILIES = [name for name in FAMILIES if name != "btlm"]

REJECTED = [  # (field, value) from the issue, then the same class of mistake elsewhere
    ("bos_token_id", -5), ("pad_token_id", -1), ("eos_token_id", [2, -3]),
    ("eos_token_id", "2"), ("bos_token_id", 1.5), ("pad_token_id", True), ("eos_token_id", []),
    ("tie_word_embeddings", "no"), ("attention_bias", "false"), ("mlp_bias", 1), ("attention_out_bias", "true"),
    ("use_cache", "yes"), ("head_dim", True), ("head_dim", 16.0),
    ("norm_eps", 0), ("norm_eps", -1e-5), ("norm_eps", "1e-5"), ("norm_eps", float("nan")),
    ("initializer_range", -0.02), ("initializer_range", "0.02"), ("initializer_range", float("inf")),
    ("attention_dropout", "0.1"), ("hidden_act", ["silu"]), ("hidden_act", 5), ("max_position_embeddings", "128"),
    ("vocab_size", 256.0), ("rope_layout", None), ("norm_type", ["rmsnorm"]), ("position_embedding_type", 5),
]
ROPE_REJECTED = [
    ("rope_parameters", {"rope_type": "nosuch", "rope_theta": 1e4}), ("rope_scaling", {"rope_type": "nosuch"}),
    ("rope_theta", 0), ("rope_theta", -1.0), ("rope_theta", "10000"), ("rope_theta", float("nan")),
    ("rope_scaling", {"rope_type": "linear", "factor": -2.0}), ("rope_scaling", {"rope_type": "dynamic", "factor": 0}),
    ("rope_scaling", {"rope_type": "yarn", "factor": -1.0}), ("rope_scaling", {"rope_type": "linear", "factor": "2"}),
    ("partial_rotary_factor", "0.5"), ("partial_rotary_factor", 0), ("rope_parameters", "default"),
]
BTLM_REJECTED = [
    ("mup_output_alpha", 0), ("mup_output_alpha", -1.0), ("mup_output_alpha", "2.22"), ("mup_embeddings_scale", -1.0),
    ("mup_embeddings_scale", 0), ("mup_base_hidden_size", "256"), ("mup_base_hidden_size", -1.0),
    ("mup_scale_qk_dot_by_d", "true"), ("alibi_scaling", {"type": "linear", "factor": "2"}),
    # RoPE settings on an ALiBi model were dropped silently
    ("rope_scaling", {"rope_type": "linear", "factor": 2.0}), ("rope_theta", 5e5), ("partial_rotary_factor", 0.5),
    ("rope_parameters", {"rope_type": "default", "rope_theta": 1e4}), ("rope_layout", "interleaved"),
]
# where the message names a field under another spelling
SPELLINGS = {"rope_scaling": ("rope_scaling", "rope_parameters", "rope_type"),
             "rope_parameters": ("rope_parameters", "rope_type", "rope_theta")}


def cases():
    for family in FAMILIES:
        extra = BTLM_REJECTED if family == "btlm" else ROPE_REJECTED
        for field, value in REJECTED + extra:
            yield pytest.param(family, field, value, id=f"{family}-{field}={value!r}")


def named(message: str, fields) -> bool:
    return any(spelling in message for field in fields for spelling in SPELLINGS.get(field, (field,)))


@pytest.mark.parametrize(("family", "field", "value"), list(cases()))
def test_bad_values_are_rejected_naming_the_field(family, field, value):
    with pytest.raises(ValueError) as err:
        FAMILIES[family].config_class(**{**SMALL, field: copy.deepcopy(value)})
    assert named(str(err.value), [field]), str(err.value)


@pytest.mark.parametrize("family", ["chuxin", "skywork"])
def test_multi_head_families_follow_num_attention_heads(family):
    """ChuXinConfig(hidden_size=64, num_attention_heads=4) failed on num_key_value_heads=32, a field not set."""
    config = FAMILIES[family].config_class(hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
                                           intermediate_size=128)
    assert config.num_key_value_heads == 4
    assert FAMILIES[family].config_class().num_key_value_heads == FAMILIES[family].config_class().num_attention_heads


def test_a_family_default_that_does_not_divide_says_so():
    with pytest.raises(ValueError, match=r"num_key_value_heads=4.*TinyLlamaConfig defaults it to 4"):
        FAMILIES["tinyllama"].config_class(hidden_size=96, num_attention_heads=6)


def test_published_and_tiny_presets_still_validate(tmp_path):
    for family in FAMILIES.values():
        for preset in ("published", "tiny"):
            config = family.preset(preset)
            config.save_pretrained(tmp_path / family.name / preset)
            type(config).from_pretrained(tmp_path / family.name / preset)  # the saved file validates too


# ------------------------------------------------------------------------------------------------ property test
CANDIDATES = {  # field: (accepted values, rejected values)
    "vocab_size": ([256, 300], [0, "256", 300.0]),
    "num_attention_heads": ([4, 2], [3, 0]),
    "head_dim": ([None, 8, 16], [True, -4]),
    "norm_eps": ([1e-5, 1e-6], [0, -1.0, "1e-5", float("nan")]),
    "initializer_range": ([0.02, 0.0], [-0.02, "0.02"]),
    "tie_word_embeddings": ([True, False], ["no", 1]),
    "attention_bias": ([True, False], ["false"]),
    "mlp_bias": ([True, False], [None]),
    "bos_token_id": ([1, 0, 63, 255, None, 256], [-5, 1.5]),
    "eos_token_id": ([2, [2, 3], [2, 5000]], [[2, -3], "2"]),
    "pad_token_id": ([None, 0, 300], [-1, True]),
    "hidden_act": (["silu", "gelu"], ["nosuch", ["silu"]]),
    "attention_dropout": ([0.0, 0.1], [1.0, "0.1"]),
}
ROPE_CANDIDATES = {
    "num_key_value_heads": ([None, 1, 2], [3]),
    "rope_theta": ([1e4, 5e5], [0, -1.0, "10000"]),
    "rope_scaling": ([None, {"rope_type": "linear", "factor": 2.0}, {"rope_type": "dynamic", "factor": 2.0}],
                     [{"rope_type": "linear", "factor": -2.0}, {"rope_type": "nosuch"}]),
    "partial_rotary_factor": ([0.5, 1.0], [0, "0.5", 1.5, 0.3]),
}
BTLM_CANDIDATES = {
    "mup_output_alpha": ([2.22, 1.0], [0, -1.0, "2.22"]),
    "mup_embeddings_scale": ([14.6, 1.0], [0, -1.0]),
    "alibi_scaling": ([None, {"type": "linear", "factor": 2.0}, {"type": "linear", "train_seq_len": 64}],
                      [{"type": "linear", "factor": "2"}, {"type": "linear", "factor": 0.5}]),
    "rope_theta": ([None], [5e5]),
}


def draws(count: int = 16, seed: int = 22, bad_share: float = 0.2):
    """`count` combinations of three fields per family; each value is a rejected one with probability
    `bad_share`, so that about half the combinations are accepted."""
    generator = random.Random(seed)
    for family in FAMILIES:
        table = {**CANDIDATES, **(BTLM_CANDIDATES if family == "btlm" else ROPE_CANDIDATES)}
        for index in range(count):
            fields = generator.sample(sorted(table), 3)
            values = {f: table[f][generator.random() < bad_share] for f in fields}
            yield pytest.param(family, {f: copy.deepcopy(generator.choice(v)) for f, v in values.items()},
                               id=f"{family}-{index}")


@pytest.mark.parametrize(("family", "overrides"), list(draws()))
def test_random_configs_build_finite_models_or_name_a_field(family, overrides):
    record = FAMILIES[family]
    kwargs = {**SMALL, **{k: v for k, v in overrides.items() if v is not None or k not in ("rope_theta",)}}
    try:
        config = record.config_class(**kwargs)
    except ValueError as err:
        assert named(str(err), overrides), f"{overrides} -> {err}"
        return
    torch.manual_seed(0)
    model = record.causal_lm_class(config).eval()
    ids = torch.tensor([[config.bos_token_id if isinstance(config.bos_token_id, int) else 0, 3, 4, 5]])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, 4, config.vocab_size) and torch.isfinite(logits).all(), overrides
    assert not math.isnan(float(logits.float().abs().sum()))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_default_special_ids_with_a_small_vocabulary_warn_and_build(family, caplog):
    """Issue 31: transformers' `test_model_forward_default_config_values` shrinks vocab_size and keeps the family's
    default BOS/EOS (50256 for BTLM); that config must build a working model."""
    from transformers.utils import logging as hf_logging

    config_class = FAMILIES[family].config_class
    hf_logging.enable_propagation()
    try:
        config = config_class(**{**SMALL, "vocab_size": 99, "bos_token_id": 50256, "eos_token_id": 50256})
    finally:
        hf_logging.disable_propagation()
    assert any("not below vocab_size=99" in r.getMessage() for r in caplog.records)
    model = FAMILIES[family].causal_lm_class(config)
    logits = model(input_ids=torch.randint(0, 99, (1, 8))).logits
    assert logits.shape == (1, 8, 99) and torch.isfinite(logits).all()
