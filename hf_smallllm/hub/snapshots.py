"""Finding and loading the snapshot revisions of a published repo.

`list_snapshots` reads the repo's branches and keeps those that parse under a branch template (the given one, or
each known one: OLMo, TinyLlama), giving each one's step and tokens (as precise as the branch name). Snapshots
published as sub-folders of the main branch (Skywork's `model_hubs/Skywork-13B-Base-{0.5T,...}/`) are listed too,
with their `subfolder` and no step; load one with `from_pretrained(repo, subfolder=...)`. `load_snapshot` picks a
branch by step and loads it:

- `match="exact"` (default): the snapshot at exactly that step; otherwise an error listing the steps there are.
- `match="nearest"`: the snapshot whose step is closest (the earlier one on a tie).
- `match="floor"`: the latest snapshot at or before that step (what a "model at step N" would have been).

Downloads go through `snapshot_download` with the given endpoint and token, so this works against any Hub endpoint
in-process; the model is then loaded from the downloaded folder with `from_pretrained`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..families import FAMILIES
from .revisions import BRANCH_TEMPLATES, BranchTemplate

MATCH_MODES = ("exact", "nearest", "floor")
# Sub-folder names of snapshots published inside one branch, from the family records; `{tokens_t}` is the number
# of training tokens in trillions ("0.5", "3").
SUBFOLDER_TEMPLATES = {name: family.snapshot_subfolder_template for name, family in FAMILIES.items()
                       if family.snapshot_subfolder_template}


@dataclass(frozen=True)
class SnapshotRevision:
    branch: str
    step: int | None  # None: the publisher names only the tokens (sub-folder snapshots)
    tokens: int
    commit: str
    subfolder: str | None = None
    repo_id: str | None = None  # a milestone published as its own repository


def milestone_snapshots(family: str) -> list[SnapshotRevision]:
    """The checkpoints `family` published as repositories of their own (TinyLlama's milestones), from its record:
    no network. Load one with `from_pretrained(snapshot.repo_id)`."""
    return [SnapshotRevision("main", step, tokens, "", repo_id=repo_id)
            for repo_id, step, tokens in FAMILIES[family].milestone_repos]


def _subfolder_pattern(template: str) -> re.Pattern:
    head, tail = template.split("{tokens_t}")
    return re.compile(f"^{re.escape(head)}(?P<tokens_t>[0-9]+(?:\\.[0-9]+)?){re.escape(tail)}$")


def _subfolder_snapshots(api, repo_id: str, branches) -> list[SnapshotRevision]:
    """Sub-folder snapshots on the main branch (`branches`: the repo's refs, already listed)."""
    main = next((branch.target_commit for branch in branches if branch.name == "main"), None)
    if main is None:
        return []
    patterns = [_subfolder_pattern(template) for template in SUBFOLDER_TEMPLATES.values()]
    found = []
    for path in api.list_repo_files(repo_id, revision=main):
        if not path.endswith("/config.json"):
            continue
        folder = path[: -len("/config.json")]
        for pattern in patterns:
            match = pattern.match(folder)
            if match:
                tokens = round(float(match.group("tokens_t")) * 10**12)
                found.append(SnapshotRevision("main", None, tokens, main, subfolder=folder))
                break
    return found


def list_snapshots(repo_id: str, *, branch_template: str | None = None, endpoint: str | None = None,
                   token: str | None = None, exact_tokens: bool = False) -> list[SnapshotRevision]:
    """Snapshot branches of a repo by step. RepositoryNotFoundError (huggingface_hub) when the repo is missing.
    `exact_tokens` reads each branch's `trainer_state.json` (one small download per branch) instead of trusting the
    rounded number in the branch name."""
    from huggingface_hub import HfApi

    templates = [BranchTemplate(branch_template)] if branch_template else [BranchTemplate(t) for t in BRANCH_TEMPLATES]
    api = HfApi(endpoint=endpoint, token=token)
    refs = api.list_repo_refs(repo_id)
    found = []
    for branch in refs.branches:
        for template in templates:
            snapshot = template.parse(branch.name)
            if snapshot is not None:
                found.append(SnapshotRevision(branch.name, snapshot.step, snapshot.tokens, branch.target_commit))
                break
    if exact_tokens:
        found = [_with_exact_tokens(repo_id, s, endpoint, token) for s in found]
    if not branch_template:
        found += _subfolder_snapshots(api, repo_id, refs.branches)
    return sorted(found, key=lambda s: (s.step is None, s.step or 0, s.tokens, s.branch, s.subfolder or ""))


def _with_exact_tokens(repo_id, snapshot: SnapshotRevision, endpoint, token) -> SnapshotRevision:
    import json

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = hf_hub_download(repo_id, "trainer_state.json", revision=snapshot.commit, endpoint=endpoint, token=token)
    except EntryNotFoundError:
        return snapshot
    state = json.loads(open(path, encoding="utf-8").read())
    return SnapshotRevision(snapshot.branch, int(state.get("global_step", snapshot.step)),
                            int(state.get("num_input_tokens_seen") or snapshot.tokens), snapshot.commit)


def pick_snapshot(snapshots: list[SnapshotRevision], step: int, match: str = "exact") -> SnapshotRevision:
    if match not in MATCH_MODES:
        raise ValueError(f"match={match!r}; choose one of {MATCH_MODES}")
    snapshots = [s for s in snapshots if s.step is not None]
    if not snapshots:
        raise ValueError("the repo has no snapshot branches with a step (sub-folder snapshots load with subfolder=)")
    steps = [s.step for s in snapshots]
    if match == "exact":
        exact = [s for s in snapshots if s.step == step]
        if not exact:
            raise ValueError(f"no snapshot at step {step}; snapshots exist at steps {steps} "
                             f"(use match='nearest' or 'floor')")
        return exact[0]
    if match == "floor":
        before = [s for s in snapshots if s.step <= step]
        if not before:
            raise ValueError(f"no snapshot at or before step {step}; the first is at step {steps[0]}")
        return before[-1]
    return min(snapshots, key=lambda s: (abs(s.step - step), s.step))


def download_snapshot(repo_id: str, *, step: int | None = None, revision: str | None = None, match: str = "exact",
                      branch_template: str | None = None, endpoint: str | None = None, token: str | None = None,
                      cache_dir: str | None = None, subfolder: str | None = None) -> tuple[str, str]:
    """(local folder, revision) of a snapshot chosen by `step` (or an explicit `revision`; main when neither), or of
    the sub-folder snapshot `subfolder` of that revision (only its files are downloaded)."""
    from huggingface_hub import snapshot_download

    if step is not None and revision is not None:
        raise ValueError("pass step or revision, not both")
    if step is not None and subfolder is not None:
        raise ValueError("pass step or subfolder, not both (sub-folder snapshots have no step)")
    if step is not None:
        revision = pick_snapshot(list_snapshots(repo_id, branch_template=branch_template, endpoint=endpoint,
                                                token=token), step, match).branch
    revision = revision or "main"
    patterns = [f"{subfolder.strip('/')}/*"] if subfolder else None
    folder = snapshot_download(repo_id, revision=revision, endpoint=endpoint, token=token, cache_dir=cache_dir,
                               allow_patterns=patterns)
    if subfolder:
        folder = os.path.join(folder, subfolder.strip("/"))
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise ValueError(f"{repo_id}@{revision} has no snapshot sub-folder {subfolder!r} (no config.json there)")
    return folder, revision


def load_snapshot(repo_id: str, *, step: int | None = None, revision: str | None = None, match: str = "exact",
                  branch_template: str | None = None, endpoint: str | None = None, token: str | None = None,
                  cache_dir: str | None = None, subfolder: str | None = None, model_class=None,
                  **from_pretrained_kwargs):
    """The model of one snapshot (see the module docstring for `match`); keyword arguments go to `from_pretrained`.
    With hf_smallllm imported the package's classes are used, not the repo's remote code."""
    from transformers import AutoModelForCausalLM

    import hf_smallllm  # noqa: F401  registers the architectures

    folder, _ = download_snapshot(repo_id, step=step, revision=revision, match=match, branch_template=branch_template,
                                  endpoint=endpoint, token=token, cache_dir=cache_dir, subfolder=subfolder)
    return (model_class or AutoModelForCausalLM).from_pretrained(folder, **from_pretrained_kwargs)


__all__ = ["MATCH_MODES", "SnapshotRevision", "download_snapshot", "list_snapshots", "load_snapshot",
           "milestone_snapshots", "pick_snapshot"]
