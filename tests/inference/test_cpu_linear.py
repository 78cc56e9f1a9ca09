"""oneDNN-packed linear layers: same function as nn.Linear (to float rounding), inference only, reversible."""

import pytest
import torch
from torch import nn

from hf_smallllm.inference import PackedLinear, can_pack_linears, pack_linears, pack_linears_if_faster, unpack_linears

from ..models.helpers import random_ids, tiny_model

pytestmark = pytest.mark.skipif(not can_pack_linears(), reason="this torch build has no oneDNN CPU kernels")


def test_packed_linear_matches_linear_on_any_leading_shape():
    linear = nn.Linear(64, 96)
    packed = PackedLinear(linear)
    for shape in [(1, 64), (1, 1, 64), (3, 5, 64)]:
        x = torch.randn(shape)
        with torch.no_grad():
            torch.testing.assert_close(packed(x), linear(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["tinyllama", "geb", "btlm"])
def test_packed_model_generates_like_the_original(family):
    model = tiny_model(family)
    ids = random_ids(model.config.vocab_size, (2, 9))
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        logits, tokens = model(ids).logits, model.generate(ids, **kwargs)
        count = pack_linears(model, min_weights=0)
        packed_logits, packed_tokens = model(ids).logits, model.generate(ids, **kwargs)
    layers = model.config.num_hidden_layers
    tied = model.config.tie_word_embeddings
    assert count == 7 * layers + (0 if tied else 1)  # q k v o gate up down per layer, plus an untied head
    torch.testing.assert_close(packed_logits, logits, atol=1e-4, rtol=1e-4)
    assert torch.equal(packed_tokens, tokens)
    if tied:  # the tied head keeps sharing the embedding matrix
        assert model.lm_head.weight is model.model.embed_tokens.weight


def test_packing_is_reversible_and_saves_dense_weights(tmp_path):
    model = tiny_model("tinyllama")
    original = {k: v.clone() for k, v in model.state_dict().items()}
    pack_linears(model, min_weights=0)
    packed_state = model.state_dict()
    assert set(packed_state) == set(original)
    for key, value in original.items():
        torch.testing.assert_close(packed_state[key], value, atol=0, rtol=0)
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path)
    for key, value in original.items():
        torch.testing.assert_close(reloaded.state_dict()[key], value, atol=0, rtol=0)
    assert unpack_linears(model) == 15
    assert all(type(m) is not PackedLinear for m in model.modules())
    for key, value in original.items():
        torch.testing.assert_close(model.state_dict()[key], value, atol=0, rtol=0)


def test_packed_layers_refuse_training_and_other_dtypes():
    model = tiny_model("tinyllama")
    pack_linears(model, min_weights=0)
    ids = random_ids(model.config.vocab_size, (1, 5))
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    with pytest.raises(RuntimeError, match="inference-only"):
        model(inputs_embeds=embeds)
    with pytest.raises(ValueError, match="float32 or bfloat16 CPU weight"):
        PackedLinear(nn.Linear(4, 4).to(torch.float16))
    fp16 = tiny_model("tinyllama").to(torch.float16)
    assert pack_linears(fp16, min_weights=0) == 0  # fp16 layers are left alone
    assert pack_linears(tiny_model("tinyllama")) == 0  # tiny matrices stay plain: packing them is slower


@pytest.mark.slow
def test_compiled_static_cache_decoding_matches_eager():
    from hf_smallllm.inference import enable_compiled_decoding

    model = tiny_model("btlm")  # ALiBi: the bias must follow the static cache's fixed length
    ids = random_ids(model.config.vocab_size, (1, 8))
    kwargs = dict(max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        eager = model.generate(ids, **kwargs)
        enable_compiled_decoding(model)
        compiled = model.generate(ids, **kwargs)
        again = model.generate(ids, **kwargs)  # reuses the compiled graph
    assert torch.equal(compiled, eager) and torch.equal(again, eager)


def test_packed_model_can_be_deep_copied():
    import copy

    model = tiny_model("geb")
    pack_linears(model, min_weights=0)
    clone = copy.deepcopy(model)
    ids = random_ids(model.config.vocab_size, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(clone(ids).logits, model(ids).logits, atol=0, rtol=0)
    assert all(type(m) is PackedLinear for m in (clone.lm_head, clone.model.layers[0].mlp.down_proj))


def fake_forward_seconds(packed: float, plain: float = 1.0):
    """A stand-in for timing a forward: `packed` seconds while the model holds packed layers, `plain` otherwise."""
    return lambda model: packed if any(type(m) is PackedLinear for m in model.modules()) else plain


@pytest.mark.parametrize("interleaved", [True, False])
def test_pack_linears_if_faster_keeps_whichever_forward_timed_faster(monkeypatch, interleaved):
    from hf_smallllm.inference import cpu_linear

    if not interleaved:  # too little memory for both copies at once: timed one after the other
        monkeypatch.setattr(cpu_linear, "available_memory_bytes", lambda: 1)
    model = tiny_model("tinyllama")
    ids = random_ids(model.config.vocab_size, (1, 7))
    with torch.no_grad():
        reference = model(ids).logits
    monkeypatch.setattr(cpu_linear, "_one_token_forward_seconds", fake_forward_seconds(packed=0.5))
    choice = cpu_linear.pack_linears_if_faster(model, min_weights=0)
    assert choice.packed and (choice.plain_seconds, choice.packed_seconds) == (1.0, 0.5)
    assert type(model.lm_head) is PackedLinear and "packed" in choice.describe()

    model = tiny_model("tinyllama")
    # packed faster by less than the 3% margin: plain layers stay, or come back
    monkeypatch.setattr(cpu_linear, "_one_token_forward_seconds", fake_forward_seconds(packed=0.99))
    choice = cpu_linear.pack_linears_if_faster(model, min_weights=0)
    assert not choice.packed and all(type(m) is not PackedLinear for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference, atol=0, rtol=0)  # the dense weights are exact


def test_pack_linears_if_faster_decides_on_alternating_rounds(monkeypatch):
    from hf_smallllm.inference import cpu_linear

    timed = []
    # a noise burst during one round's plain forward must not decide: the median per-round ratio does
    noisy = iter([9.0, 9.0, 1.0, 1.0, 1.0])

    def forward(model):
        timed.append(any(type(m) is PackedLinear for m in model.modules()))
        return next(noisy) if not timed[-1] else 1.1
    monkeypatch.setattr(cpu_linear, "_one_token_forward_seconds", forward)
    choice = cpu_linear.pack_linears_if_faster(tiny_model("tinyllama"), rounds=4, min_weights=0)
    assert timed == [False, True, True, False, False, True, True, False, False, True]  # order alternates
    assert not choice.packed  # packed (1.1 s) is slower than plain in most rounds


def test_pack_linears_if_faster_times_real_forwards():
    model = tiny_model("tinyllama").train()
    choice = pack_linears_if_faster(model, rounds=2, min_weights=0)
    assert choice.plain_seconds > 0 and choice.packed_seconds > 0
    assert choice.packed == any(type(m) is PackedLinear for m in model.modules())
    assert model.training  # the mode it came in
    small = pack_linears_if_faster(tiny_model("tinyllama"))  # nothing reaches the default size threshold
    assert not small.packed and small.packed_seconds is None and "large enough" in small.describe()


def test_bf16_packed_linear_matches_linear():
    linear = nn.Linear(64, 96).to(torch.bfloat16)
    packed = PackedLinear(linear)
    x = torch.randn(2, 3, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), linear(x))  # bf16 tolerances
    assert packed.to_linear().weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="computes in torch.bfloat16"):
        packed(x.float())
