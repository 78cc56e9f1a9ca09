"""ALiBi position interpolation (`alibi_scaling`) against the published BTLM semantics (arXiv 2310.13017, BTLM
README; docs/architectures.md 1.1 and 1.4 item 5): the bias is -slope_h / scale * |i - j| with scale = `factor` (fixed),
or kv_length / train_seq_len once the attended length (cache included) exceeds train_seq_len (dynamic), else 1."""

import pytest
import torch

from hf_smallllm import preset_config
from hf_smallllm.models.attention_smallllm import SmallLLMAlibi, alibi_bias, alibi_slopes
from tests.models.helpers import random_ids, tiny_model

TRAIN = 32


def published_bias(num_heads: int, alibi_scaling, query_length: int, cached: int) -> torch.Tensor:
    """The published layer's arithmetic, written out: [heads, q, kv]."""
    context = torch.arange(cached, cached + query_length)[:, None]
    memory = torch.arange(cached + query_length)[None, :]
    relative = (memory - context).abs().unsqueeze(0).expand(num_heads, -1, -1).float()
    if alibi_scaling is None:
        scale = 1.0
    elif alibi_scaling.get("factor") is not None:
        scale = alibi_scaling["factor"]
    elif relative.shape[-1] > alibi_scaling["train_seq_len"]:
        scale = relative.shape[-1] / alibi_scaling["train_seq_len"]
    else:
        scale = 1.0
    return (alibi_slopes(num_heads) / -scale)[:, None, None] * relative


@pytest.mark.parametrize("alibi_scaling", [None, {"type": "linear", "factor": 4.0},
                                           {"type": "linear", "train_seq_len": TRAIN}])
@pytest.mark.parametrize("query_length,cached", [(16, 0), (TRAIN, 0), (80, 0), (1, 79), (5, 40)])
def test_bias_matches_published_semantics(alibi_scaling, query_length, cached):
    config = preset_config("btlm", "tiny", alibi_scaling=alibi_scaling)
    alibi = SmallLLMAlibi(config)
    slopes = alibi.scaled_slopes(cached + query_length).view(-1)
    ours = alibi_bias(slopes, torch.arange(query_length) + cached, cached + query_length, torch.float32)[0]
    torch.testing.assert_close(ours, published_bias(config.num_attention_heads, alibi_scaling, query_length, cached))


@pytest.mark.parametrize("alibi_scaling", [
    {"type": "linear", "factor": 1.0}, {"type": "linear", "factor": 0.5}, {"type": "linear", "train_seq_len": 1},
    {"type": "linear", "train_seq_len": 2.5}, {"type": "dynamic", "factor": 2.0}, {"type": "linear"},
    {"type": "linear", "factor": 2.0, "train_seq_len": 8}, {"factor": 2.0}, "linear", [2.0],
])
def test_invalid_alibi_scaling_is_rejected(alibi_scaling):
    with pytest.raises(ValueError, match="alibi_scaling"):
        preset_config("btlm", "tiny", alibi_scaling=alibi_scaling)


def test_alibi_scaling_only_with_alibi():
    with pytest.raises(ValueError, match="alibi_scaling"):
        preset_config("tinyllama", "tiny", alibi_scaling={"type": "linear", "factor": 2.0})


def _with_slopes_divided(model, divisor: float):
    twin = tiny_model("btlm", model.config._attn_implementation)
    twin.load_state_dict(model.state_dict())
    twin.model.alibi.slopes.div_(divisor)
    return twin


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_model_logits_follow_the_scaling(attn):
    ids = random_ids(256, (1, 2 * TRAIN))
    fixed = tiny_model("btlm", attn, alibi_scaling={"type": "linear", "factor": 4.0})
    dynamic = tiny_model("btlm", attn, alibi_scaling={"type": "linear", "train_seq_len": TRAIN})
    with torch.no_grad():
        torch.testing.assert_close(fixed(ids).logits, _with_slopes_divided(fixed, 4.0)(ids).logits)
        # dynamic: untouched up to train_seq_len, slopes halved over 2 x train_seq_len
        plain = _with_slopes_divided(dynamic, 1.0)
        torch.testing.assert_close(dynamic(ids[:, :TRAIN]).logits, plain(ids[:, :TRAIN]).logits)
        torch.testing.assert_close(dynamic(ids).logits, _with_slopes_divided(dynamic, 2.0)(ids).logits)
        assert (dynamic(ids).logits - plain(ids).logits).abs().max() > 1e-4


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_generation_past_training_length_with_cache(attn):
    kwargs = {"max_new_tokens": TRAIN + 8, "do_sample": False, "pad_token_id": 0, "eos_token_id": None}
    prompt = random_ids(256, (1, TRAIN - 8))
    fixed = tiny_model("btlm", attn, alibi_scaling={"type": "linear", "factor": 2.0}, max_position_embeddings=TRAIN)
    with torch.no_grad():
        cached = fixed.generate(prompt, use_cache=True, **kwargs)
        uncached = fixed.generate(prompt, use_cache=False, **kwargs)
    assert cached.shape[1] == prompt.shape[1] + TRAIN + 8 == 2 * TRAIN
    assert torch.equal(cached, uncached)

    # dynamic: every cached step sees the scale of its own kv length, as the published cached forward does
    dynamic = tiny_model("btlm", attn, alibi_scaling={"type": "linear", "train_seq_len": TRAIN})
    with torch.no_grad():
        out = dynamic(prompt, use_cache=True)
        past, next_ids, logits = out.cache, prompt, []
        for _ in range(TRAIN // 2):
            token = out.logits[:, -1:].argmax(-1)
            next_ids = torch.cat([next_ids, token], dim=1)
            out = dynamic(token, cache=past, use_cache=True)
            logits.append(out.logits[:, -1])
        assert next_ids.shape[1] > TRAIN and torch.isfinite(torch.stack(logits)).all()
        # a static cache holds more keys than are attended: the scale follows the attended length, not the capacity
        kwargs["max_new_tokens"] = TRAIN
        assert torch.equal(dynamic.generate(prompt, cache_implementation="static", **kwargs),
                           dynamic.generate(prompt, **kwargs))
        # the last cached step's bias: slopes / (kv_length / TRAIN) over the whole cache
        kv_length = past.get_seq_length()
        slopes = dynamic.model.alibi.scaled_slopes(kv_length).view(-1)
        bias = alibi_bias(slopes, torch.tensor([kv_length - 1]), kv_length, torch.float32)[0]
        torch.testing.assert_close(bias, published_bias(4, {"type": "linear", "train_seq_len": TRAIN}, 1,
                                                        kv_length - 1))
