"""The transformers features users rely on: loss normalisation, logits_to_keep, inputs_embeds, gradient
checkpointing, hidden-state and attention outputs, low precision, and the muP multipliers in the forward pass."""

import pytest
import torch
import torch.nn.functional as F

from .helpers import ALL_FAMILIES, random_ids, tiny_model


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_loss_honours_num_items_in_batch(family):
    model = tiny_model(family)
    ids = random_ids(model.config.vocab_size, (2, 12))
    labels = ids.clone()
    labels[0, :5] = -100
    with torch.no_grad():
        out = model(ids, labels=labels)
        summed = model(ids, labels=labels, num_items_in_batch=torch.tensor(1)).loss
        logits = out.logits[:, :-1].reshape(-1, model.config.vocab_size)
        manual = F.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")
    n_targets = (labels[:, 1:] != -100).sum()
    assert out.loss.item() == pytest.approx((manual / n_targets).item(), rel=1e-5)
    assert summed.item() == pytest.approx(manual.item(), rel=1e-5)


def test_logits_to_keep_and_inputs_embeds():
    model = tiny_model("btlm")  # has an embedding multiplier and an output multiplier
    ids = random_ids(model.config.vocab_size, (2, 9))
    with torch.no_grad():
        full = model(ids).logits
        last = model(ids, logits_to_keep=1).logits
        from_embeds = model(inputs_embeds=model.get_input_embeddings()(ids)).logits
    assert last.shape == (2, 1, model.config.vocab_size)
    torch.testing.assert_close(last[:, 0], full[:, -1])
    torch.testing.assert_close(from_embeds, full)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model()


@pytest.mark.parametrize("family", ["tinyllama", "btlm"])
def test_gradient_checkpointing_gives_the_same_gradients(family):
    ids = random_ids(256, (2, 16))
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(family).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        model(ids, labels=ids).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)


def test_hidden_states_and_attentions_are_returned():
    model = tiny_model("geb", "eager")
    ids = random_ids(model.config.vocab_size, (1, 7))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert len(out.attentions) == model.config.num_hidden_layers
    assert out.attentions[0].shape == (1, model.config.num_attention_heads, 7, 7)
    # causal: no weight on the future
    assert out.attentions[0][0, :, 0, 1:].abs().max() == 0


def test_muP_multipliers_apply_in_the_forward_pass():
    model = tiny_model("btlm")
    config = model.config
    ids = random_ids(config.vocab_size, (1, 5))
    with torch.no_grad():
        hidden = model.model(ids, output_hidden_states=True).hidden_states[0]
        torch.testing.assert_close(hidden, model.model.embed_tokens(ids) * config.mup_embeddings_scale)
        last_hidden = model.model(ids).last_hidden_state
        torch.testing.assert_close(model(ids).logits, model.lm_head(last_hidden) * config.output_logits_multiplier)
    assert model.model.layers[0].self_attn.scaling == pytest.approx(1 / config.head_dim)


@pytest.mark.parametrize("family", ["tinyllama", "btlm"])
def test_bfloat16_forward_and_backward(family):
    model = tiny_model(family).to(torch.bfloat16).train()
    ids = random_ids(model.config.vocab_size, (2, 10))
    out = model(ids, labels=ids)
    out.loss.backward()
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_dynamic_alibi_interpolation_only_beyond_training_length():
    model = tiny_model("btlm", alibi_scaling={"type": "linear", "train_seq_len": 8})
    alibi = model.model.alibi
    torch.testing.assert_close(alibi.scaled_slopes(8), alibi.slopes)
    torch.testing.assert_close(alibi.scaled_slopes(16), alibi.slopes / 2)
    fixed = tiny_model("btlm", alibi_scaling={"type": "linear", "factor": 4.0}).model.alibi
    torch.testing.assert_close(fixed.scaled_slopes(3), fixed.slopes / 4)
