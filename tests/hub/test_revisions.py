import pytest

from hf_smallllm.hub.revisions import BranchTemplate, Snapshot, select_snapshots


@pytest.mark.parametrize("template, step, tokens, name", [
    ("olmo", 1000, 4_001_366_016, "step1000-tokens4B"),
    ("tinyllama", 480_000, 1_007_000_000_000, "step-480k-token-1007B"),
    ("olmo", 30, 122_880, "step30-tokens0.000123B"),
    ("ckpt-{step}-{tokens_raw}", 7, 28_672, "ckpt-7-28672"),
    ("s{step}-{tokens_m}M", 50, 204_800, "s50-0.205M"),
])
def test_branch_names_follow_the_published_conventions(template, step, tokens, name):
    branch = BranchTemplate(template)
    assert branch.format(Snapshot(step, tokens)) == name
    parsed = branch.parse(name)
    assert parsed.step == step
    assert parsed.tokens == pytest.approx(tokens, rel=0.01)


def test_parse_rejects_other_branches():
    assert BranchTemplate("olmo").parse("main") is None
    assert BranchTemplate("olmo").parse("step-480k-token-1007B") is None
    assert BranchTemplate("tinyllama").parse("step1000-tokens4B") is None


@pytest.mark.parametrize("template, message", [
    ("tokens{tokens}B", "needs {step}"),
    ("step{step}-{epoch}", "unknown fields"),
    ("step {step}", "not a usable branch"),
])
def test_bad_templates_are_refused(template, message):
    with pytest.raises(ValueError, match=message):
        BranchTemplate(template).format(Snapshot(1, 1))


def test_select_snapshots():
    snaps = [Snapshot(s, s * 10) for s in (10, 20, 30, 40)]
    assert [s.step for s in select_snapshots(snaps)] == [10, 20, 30, 40]
    assert [s.step for s in select_snapshots(snaps, every=20)] == [20, 40]
    assert [s.step for s in select_snapshots(snaps, steps=[10], every=40)] == [10, 40]
    with pytest.raises(ValueError, match=r"no checkpoint for step\(s\) \[15\]"):
        select_snapshots(snaps, steps=[15])
