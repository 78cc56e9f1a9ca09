"""The shared battery every family passes, as transformers' model testers do: a family's own tests set only what
differs. Plain functions of a family name (no pytest fixtures), so the sixth-family test can run them in a process
where that family was added from its files."""

from __future__ import annotations

import tempfile

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from hf_smallllm.families import family_of, get_family

IDS = torch.tensor([[3, 17, 42, 5, 99, 7, 11, 60]])  # below the tiny vocabulary (256)


def tiny_model(family: str, seed: int = 0):
    torch.manual_seed(seed)
    record = get_family(family)
    return record.causal_lm_class(record.preset("tiny")).eval()


def check_record(family: str) -> None:
    """The record's classes are the family's own and name each other; the published preset builds."""
    record = get_family(family)
    config = record.preset("tiny")
    assert type(config) is record.config_class and family_of(config) == family
    assert record.causal_lm_class.base_model_class is record.model_class
    assert record.config_class.model_type == f"smallllm_{family}"
    record.preset("published")


def check_auto_classes(family: str) -> None:
    """The Auto classes resolve the family's model_type to its classes."""
    record = get_family(family)
    config = AutoConfig.for_model(record.config_class.model_type, **record.presets["tiny"])
    assert type(config) is record.config_class
    assert type(AutoModel.from_config(config)) is record.model_class
    assert type(AutoModelForCausalLM.from_config(config)) is record.causal_lm_class


@torch.no_grad()
def check_forward(family: str) -> None:
    """Logits of the right shape, finite; the loss of the labels is their mean cross-entropy."""
    model = tiny_model(family)
    out = model(IDS, labels=IDS)
    assert out.logits.shape == (1, IDS.shape[1], model.config.vocab_size)
    assert torch.isfinite(out.logits).all()
    expected = torch.nn.functional.cross_entropy(out.logits[0, :-1].float(), IDS[0, 1:])
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def check_round_trip(family: str) -> None:
    """save_pretrained -> AutoModelForCausalLM.from_pretrained gives the same class and the same logits, and the
    folder carries the remote code of its classes (config and modeling files, an auto_map naming them)."""
    model = tiny_model(family)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        loaded = AutoModelForCausalLM.from_pretrained(folder).eval()
        auto_map = loaded.config.auto_map
    assert type(loaded) is type(model)
    assert auto_map["AutoModelForCausalLM"].endswith(f".{type(model).__name__}")
    torch.testing.assert_close(loaded(IDS).logits, model(IDS).logits, rtol=0, atol=0)


@torch.no_grad()
def check_generation(family: str) -> None:
    """Greedy generation with the cache equals greedy generation without it."""
    model = tiny_model(family)
    settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    cached = model.generate(IDS, use_cache=True, **settings)
    uncached = model.generate(IDS, use_cache=False, **settings)
    assert cached.shape == (1, IDS.shape[1] + 6)
    assert torch.equal(cached, uncached)


BATTERY = (check_record, check_auto_classes, check_forward, check_round_trip, check_generation)


def run_battery(family: str) -> list[str]:
    """Run every check on `family`; returns the names of the checks run."""
    for check in BATTERY:
        check(family)
    return [check.__name__ for check in BATTERY]
