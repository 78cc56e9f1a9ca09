"""Every published recipe carries the numbers its sources give (the sources are cited in the recipe file, next to
each number): tokens per step, optimizer betas and learning rates, mixture weights per stage, packing, filters."""

import math

import pytest

from hf_smallllm.data import MixtureSchedule
from hf_smallllm.train import load_recipe
from hf_smallllm.train.recipe import RECIPES_DIR, find_recipe

PUBLISHED = sorted(p.stem for p in RECIPES_DIR.glob("published-*.yaml"))
NO_GITHUB = [{"field": "meta.redpajama_set_name", "exclude": ["RedPajamaGithub"]}]


def phase_weights(stage):
    """(start weights, end weights) of every mixture phase of a stage, zeros left out."""
    result = []
    for phase in stage.mixture_phases:
        for weights in (phase["weights"], phase.get("end_weights")):
            if weights is not None:
                result.append({name: w for name, w in weights.items() if w})
    return result


@pytest.mark.parametrize("name", PUBLISHED)
def test_every_published_recipe_cites_its_sources_and_its_weights_sum_to_one(name):
    recipe = load_recipe(name)
    assert "Every number cites one of:" in find_recipe(name).read_text()
    assert recipe.optimizer.betas == (0.9, 0.95) and recipe.optimizer.eps == 1e-8
    assert recipe.optimizer.weight_decay == 0.1 and recipe.optimizer.max_grad_norm == 1.0
    for stage in recipe.stage_plans:
        for weights in phase_weights(stage):
            # as written: 1 up to the rounding of the source's table (Skywork's percentages add up to 99.8)
            assert sum(weights.values()) == pytest.approx(1.0, abs=0.0025), (stage.name, weights)
        mixture = MixtureSchedule(stage.mixture_phases, stage.steps, [s["name"] for s in stage.data.sources])
        for step in (0, stage.steps // 2, stage.steps - 1):
            assert math.fsum(mixture.weights_at(step).values()) == pytest.approx(1.0, abs=1e-12)


def tokens(stage):
    return stage.steps * stage.data.tokens_per_step


def test_tinyllama_v1():
    """README and pretrain/tinyllama.py of jzhang38/TinyLlama; SlimPajama without GitHub (prepare_slimpajama.py)."""
    recipe = load_recipe("published-tinyllama")
    assert recipe.data.tokens_per_step == 1024 * 2048 and recipe.data.seq_len == 2048
    assert recipe.data.packing == "causal"
    assert recipe.optimizer.lr == 4e-4 and recipe.optimizer.lr * recipe.schedule.min_lr_ratio == pytest.approx(4e-5)
    assert recipe.schedule.type == "cosine" and recipe.schedule.warmup_steps == 2000
    assert recipe.training.max_steps == 715256 * 2
    slimpajama, starcoder = recipe.data.sources
    assert slimpajama["filters"] == NO_GITHUB and "filters" not in starcoder
    assert (slimpajama["weight"], starcoder["weight"]) == (0.693584, 0.306416)


def test_tinyllama_v1_1_has_three_stages():
    """The TinyLlama_v1.1 model card: 1.5T basic, domain to ~1.85T (ramp over ~6B tokens), cooldown to 2T with the
    batch 1.8M -> 7.2M under the original cosine schedule."""
    recipe = load_recipe("published-tinyllama-v1.1")
    basic, domain, cooldown = recipe.stage_plans
    assert [s.name for s in recipe.stage_plans] == ["basic", "domain", "cooldown"]
    assert tokens(basic) == pytest.approx(1.5e12, rel=1e-3) and tokens(domain) == pytest.approx(0.35e12, rel=1e-3)
    assert tokens(cooldown) == pytest.approx(0.15e12, rel=1e-3)
    assert basic.data.tokens_per_step == domain.data.tokens_per_step == pytest.approx(1.8e6, rel=0.01)
    assert cooldown.data.tokens_per_step == 4 * basic.data.tokens_per_step == pytest.approx(7.2e6, rel=0.01)
    assert cooldown.training.gradient_accumulation_steps == 4 * basic.training.gradient_accumulation_steps
    assert all(s.schedule is None for s in recipe.stage_plans)  # one run-wide cosine, kept through the cooldown
    assert recipe.schedule.type == "cosine" and recipe.optimizer.lr == 4e-4
    assert all(s.data.packing == "causal" and s.data.seq_len == 2048 for s in recipe.stage_plans)
    assert phase_weights(basic) == [{"slimpajama": 1.0}]
    math_code = {"slimpajama": 0.75, "starcoder": 0.15, "proof_pile": 0.10}
    ramp, steady = domain.mixture_phases
    assert ramp["end_weights"] == steady["weights"] == math_code == phase_weights(cooldown)[0]
    assert ramp["until"] * tokens(domain) == pytest.approx(6e9, rel=0.01)
    assert recipe.data.sources[0]["filters"] == NO_GITHUB


def test_skywork_has_two_stages_with_the_table_1_mix():
    """arXiv 2310.19341: 16M tokens per step of 4,096-token rows; stage 1's mix (Table 1); cosine 6e-4 -> 6e-5 over
    the first 2T tokens then 6e-5; stage 2: ~130B tokens, STEM 10% -> 40%, constant 6e-5."""
    recipe = load_recipe("published-skywork")
    general, stem = recipe.stage_plans
    assert recipe.data.tokens_per_step == 4096 * 4096 and recipe.data.seq_len == 4096
    assert recipe.data.packing == "document"
    assert tokens(general) + tokens(stem) == pytest.approx(3.2e12, rel=1e-3)
    assert tokens(stem) == pytest.approx(130e9, rel=1e-3)
    assert phase_weights(general) == [{"english": 0.498, "chinese": 0.396, "code": 0.08, "other": 0.024}]
    (phase,) = stem.mixture_phases
    assert phase["weights"]["stem"] == 0.1 and phase["end_weights"]["stem"] == 0.4
    for name, share in phase_weights(general)[0].items():  # the rest keeps stage 1's proportions
        assert phase["weights"][name] == pytest.approx(0.9 * share) and phase["end_weights"][name] == pytest.approx(
            0.6 * share)
    assert recipe.optimizer.lr == 6e-4 and recipe.optimizer.lr * recipe.schedule.min_lr_ratio == pytest.approx(6e-5)
    decay_end = recipe.schedule.decay_until * recipe.training.max_steps * recipe.data.tokens_per_step
    assert recipe.schedule.type == "cosine_then_constant" and decay_end == pytest.approx(2e12, rel=1e-3)
    assert general.schedule is None and stem.schedule.type == "constant" and stem.lr == 6e-5
    assert stem.schedule.warmup_steps == 0


def test_btlm_builds_plain_causal_rows():
    """Cerebras modelzoo params_btlm_2p7b_{2k,8k}.yaml: fixed-length rows without attention reset, 1,920 x 2,048
    then 480 x 8,192, lr 0.012 with 95 warmup steps, linear decay to 1.0138e-4, 159,636 steps, muP."""
    recipe = load_recipe("published-btlm")
    assert recipe.data.packing == "causal"
    short, long = recipe.stage_plans
    assert (short.data.seq_len, short.steps, long.data.seq_len, long.steps) == (2048, 119727, 8192, 39909)
    assert short.data.tokens_per_step == long.data.tokens_per_step == 1920 * 2048 == 480 * 8192
    assert short.schedule is None and long.schedule is None  # one linear schedule over both stages
    for stage in (short, long):  # the stated layout, 32 GPUs, splits every stage's rows (the stream's rule)
        rows = stage.data.tokens_per_step // stage.data.seq_len
        assert rows % (stage.training.gradient_accumulation_steps * 32) == 0, stage.name
    assert recipe.training.max_steps == 159636 and recipe.optimizer.mup
    assert recipe.optimizer.lr == 0.012 and recipe.schedule.warmup_steps == 95 and recipe.schedule.type == "linear"
    assert recipe.optimizer.lr * recipe.schedule.min_lr_ratio == pytest.approx(1.0138e-4, rel=0.01)


def test_geb_and_chuxin():
    """GEB: arXiv 2406.09900 (its numbers: test_stability.py); ChuXin: its mix and optimizer stay labelled guesses."""
    geb = load_recipe("published-geb")
    assert geb.data.tokens_per_step == 320 * 4096 and geb.data.packing == "document"
    chuxin = load_recipe("published-chuxin")
    assert chuxin.data.packing == "document" and chuxin.data.seq_len == 4096
    text = find_recipe("published-chuxin").read_text()
    for line in text.splitlines():
        if line.startswith(("optimizer:", "schedule:")) or "weight:" in line:
            assert "[guess]" in line, line
