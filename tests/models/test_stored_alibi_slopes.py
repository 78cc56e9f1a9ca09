"""BTLM checkpoints store their ALiBi slopes (`transformer.relative_pe.slopes`, [heads, 1]) and BTLM's forward uses
the stored values, so a checkpoint whose slopes were rounded (a bf16 checkpoint stores 0.8438 for 2^-0.25 = 0.8409)
gives other logits than freshly computed slopes would. The package loads them as stored, keeps them through its own
save/load, and writes them back when exporting to the official layout (issue 23, item 5)."""

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_smallllm.convert import official_to_package, package_to_official
from hf_smallllm.convert.references import btlm_official_logits
from hf_smallllm.families import FAMILIES
from hf_smallllm.models.attention_smallllm import alibi_slopes

KEY = "transformer.relative_pe.slopes"


@pytest.fixture
def rounded_slopes_checkpoint(fixtures_dir, tmp_path):
    """The BTLM golden checkpoint (official layout) with slopes that are not the computed ones: the tiny model's 4
    heads have power-of-two slopes, exact in bf16, so these are 2^(-k/4 - 1/2) rounded to bf16, like a bf16
    BTLM-3B checkpoint's."""
    folder = tmp_path / "official"
    shutil.copytree(fixtures_dir / "btlm-tiny", folder)
    state = load_file(str(folder / "model.safetensors"))
    stored = torch.tensor([2.0 ** (-(k + 1) / 4 - 0.5) for k in range(4)]).to(torch.bfloat16).float().view(-1, 1)
    assert not torch.equal(stored.view(-1), alibi_slopes(4)) and state[KEY].shape == stored.shape
    state[KEY] = stored
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder, state


def test_logits_follow_the_stored_slopes(rounded_slopes_checkpoint, tmp_path):
    folder, state = rounded_slopes_checkpoint
    model = FAMILIES["btlm"].causal_lm_class.from_pretrained(folder).eval()
    torch.testing.assert_close(model.model.alibi.slopes, state[KEY], atol=0, rtol=0)
    ids = load_file(str(folder / "expected_logits.safetensors"))["input_ids"].long()
    with torch.no_grad():
        ours = model(ids).logits
        expected = btlm_official_logits(state, model.config, ids)  # the official arithmetic, stored slopes
        computed = btlm_official_logits({k: v for k, v in state.items() if k != KEY}, model.config, ids)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    assert (ours - computed).abs().max() > 1e-3  # the fixture's slopes matter

    # kept through the package's own save and load
    model.save_pretrained(tmp_path / "package")
    again = FAMILIES["btlm"].causal_lm_class.from_pretrained(tmp_path / "package").eval()
    torch.testing.assert_close(again.model.alibi.slopes, state[KEY], atol=0, rtol=0)


def test_conversion_keeps_the_stored_slopes_both_ways(rounded_slopes_checkpoint, tmp_path):
    folder, state = rounded_slopes_checkpoint
    official_to_package(folder, tmp_path / "package", progress=False)
    package = load_file(str(tmp_path / "package" / "model.safetensors"))
    torch.testing.assert_close(package["model.alibi.slopes"], state[KEY], atol=0, rtol=0)
    package_to_official(tmp_path / "package", tmp_path / "back", progress=False)
    torch.testing.assert_close(load_file(str(tmp_path / "back" / "model.safetensors"))[KEY], state[KEY], atol=0, rtol=0)


def test_checkpoints_without_slopes_get_the_standard_ones(tmp_path):
    """Package checkpoints saved before slopes were stored: computed on load and written on export."""
    torch.manual_seed(0)
    from hf_smallllm import preset_config

    model = FAMILIES["btlm"].causal_lm_class(preset_config("btlm", "tiny")).eval()
    model.save_pretrained(tmp_path / "package")
    state = load_file(str(tmp_path / "package" / "model.safetensors"))
    del state["model.alibi.slopes"]
    save_file(state, str(tmp_path / "package" / "model.safetensors"), metadata={"format": "pt"})
    loaded = FAMILIES["btlm"].causal_lm_class.from_pretrained(tmp_path / "package")
    torch.testing.assert_close(loaded.model.alibi.slopes, alibi_slopes(4).view(-1, 1), atol=0, rtol=0)
    package_to_official(tmp_path / "package", tmp_path / "official", progress=False)
    exported = load_file(str(tmp_path / "official" / "model.safetensors"))[KEY]
    torch.testing.assert_close(exported, alibi_slopes(4).view(-1, 1), atol=0, rtol=0)
