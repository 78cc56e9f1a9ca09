"""Every rope scaling of transformers' rope utilities, in both pair layouts and with partial rotary, gives the same
logits as transformers' own Llama (full rotary, half layout) and GLM (partial interleaved rotary, GEB's layout),
inside and beyond the original context, and in cached generation where dynamic types recompute frequencies."""

import pytest
import torch

from hf_smallllm import preset_config
from tests.models.helpers import glm_reference, llama_reference, random_ids, tiny_model

ORIGINAL = 64  # the pre-extension context of every scaled config below


def rope_parameters(rope_type: str, rotary_dim: int) -> dict:
    scaled = {
        "default": {},
        "linear": {"factor": 4.0},
        "dynamic": {"factor": 4.0},
        "yarn": {"factor": 2.0, "original_max_position_embeddings": ORIGINAL},
        "llama3": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": ORIGINAL},
        "longrope": {"short_factor": [1.0 + 0.1 * i for i in range(rotary_dim // 2)],
                     "long_factor": [2.0 + 0.5 * i for i in range(rotary_dim // 2)],
                     "original_max_position_embeddings": ORIGINAL},
    }[rope_type]
    return {"rope_type": rope_type, "rope_theta": 50_000.0, **scaled}


CASES = [("tinyllama", "linear"), ("tinyllama", "dynamic"), ("tinyllama", "yarn"), ("tinyllama", "llama3"),
         ("tinyllama", "longrope"), ("geb", "linear"), ("geb", "dynamic"), ("geb", "yarn"), ("geb", "llama3"),
         ("geb", "longrope")]


def scaled_pair(family: str, rope_type: str):
    base = preset_config(family, "tiny")
    params = rope_parameters(rope_type, base.rotary_dim)
    params["partial_rotary_factor"] = base.rope_parameters.get("partial_rotary_factor", 1.0)
    model = tiny_model(family, "eager", rope_parameters=params, max_position_embeddings=2 * ORIGINAL)
    reference = glm_reference(model) if family == "geb" else llama_reference(model)
    return model, reference


@pytest.mark.parametrize("family,rope_type", CASES)
def test_scaled_rope_logits_match_transformers(family, rope_type):
    model, reference = scaled_pair(family, rope_type)
    if family == "geb":
        assert model.config.rotary_dim < model.config.head_dim and model.config.rope_layout == "interleaved"
    unscaled = tiny_model(family, "eager", rope_parameters={"rope_type": "default", "rope_theta": 50_000.0,
                          "partial_rotary_factor": model.config.rope_parameters.get("partial_rotary_factor", 1.0)},
                          max_position_embeddings=2 * ORIGINAL)
    for length in (ORIGINAL // 2, 3 * ORIGINAL):  # inside, and beyond every length the config names
        ids = random_ids(model.config.vocab_size, (2, length))
        with torch.no_grad():
            ours, theirs, plain = model(ids).logits, reference(ids).logits, unscaled(ids).logits
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    # the scaling is really applied: at 3x the original length every type changes the logits
    assert (ours - plain).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["tinyllama", "geb"])
@pytest.mark.parametrize("rope_type", ["dynamic", "longrope"])
def test_length_dependent_rope_in_cached_generation(family, rope_type):
    """Dynamic NTK and longrope switch frequencies once the cache passes the original length; greedy generation
    across that point must agree with transformers token for token."""
    model, reference = scaled_pair(family, rope_type)
    ids = random_ids(model.config.vocab_size, (1, ORIGINAL - 4))
    kwargs = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        ours = model.generate(ids, **kwargs)
        theirs = reference.generate(ids, **kwargs)
    assert ours.shape[1] > ORIGINAL
    assert torch.equal(ours, theirs)


def test_raised_rope_theta_matches_llama():
    """ChuXin-style extension raises the base only (rope_type default)."""
    model = tiny_model("chuxin", "sdpa", rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0})
    reference = llama_reference(model)
    ids = random_ids(model.config.vocab_size, (1, 96))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-5, rtol=1e-5)
