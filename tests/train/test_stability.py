"""Training-stability options (recipe section `stability`): GLM-130B's embedding-gradient shrink and loss-spike
skipping, for any family, and GEB's published recipe that turns both on."""

import copy
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_smallllm import FAMILIES, preset_config
from hf_smallllm.train import read_metrics, run_pretraining
from hf_smallllm.train.checkpointer import read_optimizer_state
from hf_smallllm.train.recipe import RecipeError, load_recipe
from hf_smallllm.train.stability import LossSpikeSkipper, drop_gradients, shrink_embedding_gradient

from .test_resume import Crash, CrashAtStep

SPIKE_STEP = 5


# ---------------------------------------------------------------------------------------------- embedding shrink
@pytest.mark.parametrize("family", ["geb", "tinyllama", "btlm"])
def test_embedding_shrink_scales_only_the_embedding_gradient(family):
    torch.manual_seed(0)
    model = FAMILIES[family].causal_lm_class(preset_config(family, "tiny", tie_word_embeddings=False)).train()
    ids = torch.randint(0, 256, (2, 16))

    def run():
        model.zero_grad()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    logits, grads = run()
    handle = shrink_embedding_gradient(model, 0.1)
    shrunk_logits, shrunk = run()
    torch.testing.assert_close(shrunk_logits, logits, rtol=1e-5, atol=1e-5)  # same forward values
    for name, grad in grads.items():
        expected = grad * 0.1 if name == "model.embed_tokens.weight" else grad
        torch.testing.assert_close(shrunk[name], expected, rtol=1e-4, atol=1e-7, msg=name)
    handle.remove()
    torch.testing.assert_close(run()[1]["model.embed_tokens.weight"], grads["model.embed_tokens.weight"])


def test_embedding_shrink_alpha_must_be_a_share():
    model = FAMILIES["geb"].causal_lm_class(preset_config("geb", "tiny"))
    with pytest.raises(ValueError, match=r"embedding_grad_shrink=0 must be in \(0, 1\]"):
        shrink_embedding_gradient(model, 0)


# ---------------------------------------------------------------------------------------------- the skip rule
def test_spike_rule_window_factor_and_consecutive_cap():
    skipper = LossSpikeSkipper(window=3, factor=1.5, max_consecutive_skips=2)
    assert [skipper.check(x, s) for s, x in enumerate([9.0, 3.0, 3.0], 1)] == [False] * 3  # window filling: no skips
    assert skipper.threshold() == pytest.approx(1.5 * 5.0)
    assert skipper.check(7.0, 4) is False and skipper.check(20.0, 5) is True and skipper.check(math.nan, 6) is True
    assert skipper.skipped_steps == [5, 6]
    assert skipper.check(20.0, 7) is False  # the third in a row: the level moved, apply it and restart the window
    assert list(skipper.history) == [20.0] and skipper.threshold() is None
    restored = LossSpikeSkipper(window=3)
    restored.load_state(skipper.state()["attributes"])
    assert list(restored.history) == [20.0] and restored.skipped_steps == [5, 6]


def test_dropped_gradients_leave_adamw_untouched():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.1)
    layer(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    before = copy.deepcopy(layer.state_dict()), copy.deepcopy(optimizer.state_dict())
    layer(torch.randn(3, 4)).sum().backward()
    drop_gradients(layer)
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before[0].values(), layer.state_dict().values(), strict=True))
    for key, state in optimizer.state_dict()["state"].items():
        assert all(torch.equal(state[k], before[1]["state"][key][k]) for k in state)


# ---------------------------------------------------------------------------------------------- training runs
class SpikeAt(TrainerCallback):
    """Makes every micro-batch loss of optimizer step `step` 20x larger (and so its gradients): a loss spike."""

    def __init__(self, step):
        self.step, self.current = step, 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        def hook(module, inputs, output):
            if module.training and self.current == self.step:
                output.loss = output.loss * 20
            return output

        model.register_forward_hook(hook)

    def on_step_begin(self, args, state, control, **kwargs):
        self.current = state.global_step + 1


def spiky_recipe(tiny_recipe, output_dir):
    recipe = copy.deepcopy(tiny_recipe)
    recipe["training"].update(output_dir=str(output_dir), save_steps=1)
    recipe["stability"] = {"embedding_grad_shrink": 0.1, "skip_loss_spikes": True, "spike_window": 3}
    return recipe


def checkpoint(run_dir, step):
    weights = load_file(str(run_dir / f"checkpoint-{step}" / "model.safetensors"))
    moments = read_optimizer_state(run_dir / f"checkpoint-{step}")["state"]
    return weights, moments


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_spiking_step_is_skipped_and_resume_decides_the_same(tiny_recipe, tmp_path):
    straight = run_pretraining(spiky_recipe(tiny_recipe, tmp_path / "straight"),
                               extra_callbacks=[SpikeAt(SPIKE_STEP)])
    assert straight.global_step == 6
    run_dir = straight.output_dir
    skips = [r for r in read_metrics(straight.metrics_path) if "skipped_loss_spike" in r]
    assert [r["step"] for r in skips] == [SPIKE_STEP] and skips[0]["skipped_loss_spike"] > skips[0]["spike_threshold"]
    (w4, m4), (w5, m5), (w6, _) = (checkpoint(run_dir, s) for s in (4, 5, 6))
    assert same(w4, w5), "the spiking step changed the weights"
    for key in m4:  # Adam moments and step counts untouched too
        assert all(torch.equal(m4[key][k], m5[key][k]) for k in m4[key])
    assert not same(w5, w6)  # the next step trains again

    # killed after step 4 and resumed: the window comes back from the checkpoint, so step 5 is skipped again
    recipe = spiky_recipe(tiny_recipe, tmp_path / "resumed")
    with pytest.raises(Crash):
        run_pretraining(recipe, extra_callbacks=[SpikeAt(SPIKE_STEP), CrashAtStep(4)])
    resumed = run_pretraining(recipe, resume=True, extra_callbacks=[SpikeAt(SPIKE_STEP)])
    assert [r["step"] for r in read_metrics(resumed.metrics_path) if "skipped_loss_spike" in r] == [SPIKE_STEP]
    assert same(checkpoint(resumed.output_dir, 6)[0], w6)


# ---------------------------------------------------------------------------------------------- recipes
def test_geb_recipe_carries_the_published_numbers():
    """arXiv 2406.09900 section 2.3 and Table 1."""
    geb = load_recipe("published-geb")
    assert geb.optimizer.betas == (0.9, 0.95) and geb.optimizer.eps == 1e-8 and geb.optimizer.lr == 4e-4
    assert geb.schedule.type == "cosine" and geb.optimizer.lr * geb.schedule.min_lr_ratio == pytest.approx(4e-5)
    assert geb.training.precision == "bf16"
    assert geb.data.seq_len == 4096 and geb.data.tokens_per_step == 320 * 4096 == 1_310_720
    assert geb.training.max_steps == 420_000 and geb.training.max_steps * geb.data.tokens_per_step == pytest.approx(
        550e9, rel=0.001)
    weights = {name: weight for name, weight in geb.mixture_phases[0]["weights"].items()}
    assert weights == {"c4": 0.331, "github_stackexchange": 0.147, "zh_commoncrawl": 0.284, "wudao": 0.089,
                       "skypile": 0.149}
    assert sum(weights.values()) == pytest.approx(1.0)
    assert geb.stability.embedding_grad_shrink == 0.1 and geb.stability.skip_loss_spikes
    tiny = load_recipe("tiny-geb")
    assert tiny.stability.embedding_grad_shrink == 0.1 and tiny.stability.skip_loss_spikes


def test_stability_is_off_unless_asked():
    for name in ("published-tinyllama", "published-btlm", "published-skywork", "published-chuxin"):
        recipe = load_recipe(name)
        assert recipe.stability.embedding_grad_shrink is None and not recipe.stability.skip_loss_spikes, name


@pytest.mark.parametrize("override, message", [
    ("stability.embedding_grad_shrink=1.5", r"stability.embedding_grad_shrink=1.5 must be a number in \(0, 1\]"),
    ("stability.spike_factor=1.0", "stability.spike_factor=1.0 must be greater than 1"),
    ("stability.spike_window=0", "stability.spike_window=0 must be at least 1"),
    ("stability.skip_spikes=true", "stability: unknown keys"),
])
def test_bad_stability_settings_name_the_field(override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe("tiny-geb", [override])


def test_fp16_spike_skipping_needs_clipping():
    with pytest.raises(RecipeError, match="needs optimizer.max_grad_norm > 0"):
        load_recipe("tiny-geb", ["training.precision=fp16", "optimizer.max_grad_norm=0"])


def test_skywork_recipe_notes_where_its_stage2_share_and_warmup_come_from():
    """The report's stage-2 STEM share averages ~20% (the shipped linear ramp averages 25%) and the 2,000 warmup steps
    come from its 7B pilot table: both said in the recipe, next to the numbers."""
    from hf_smallllm.train.recipe import find_recipe

    recipe = load_recipe("published-skywork")
    stage2 = recipe.stage_plans[-1].mixture_phases[-1]
    assert (stage2["weights"]["stem"] + stage2["end_weights"]["stem"]) / 2 == pytest.approx(0.25)
    assert recipe.schedule.warmup_steps == 2000
    text = find_recipe("published-skywork").read_text()
    assert "about 20% on average" in text and "7B pilot" in text
