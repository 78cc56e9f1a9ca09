"""Publishing a run (3 snapshots + final) to the local Hub server with the real huggingface_hub client."""

import json

import pytest
import torch
from huggingface_hub import CommitOperationAdd, HfApi
from safetensors.torch import load_file

from hf_smallllm.hub import (
    HubPublisher,
    PublishError,
    RevisionCollisionError,
    list_snapshots,
    load_snapshot,
    publish_run,
)
from hf_smallllm.hub.publish import REVISIONS_FILE
from hf_smallllm_cli import main as cli_main

from .conftest import STEPS, TOKENS_PER_STEP, make_checkpoint

BRANCHES = [f"step{s}-tokens{b}B" for s, b in zip(STEPS, ("0.000041", "0.0000819", "0.000123"), strict=True)]


def commit_count(api, repo, revision):
    return len(api.list_repo_commits(repo, revision=revision))


def test_publish_list_load_and_republish(hub, run_dir, tmp_path):
    endpoint, token = hub
    repo = "tests/full-run"
    results = publish_run(run_dir, repo, endpoint=endpoint, token=token, tags={20: "milestone-20"}, progress=False)
    assert [(r.revision, r.status) for r in results] == [(b, "published") for b in BRANCHES] + [("main", "published")]

    api = HfApi(endpoint=endpoint, token=token)
    refs = api.list_repo_refs(repo)
    assert sorted(b.name for b in refs.branches) == sorted(BRANCHES + ["main"])
    assert [(t.name, t.target_commit) for t in refs.tags] == [("milestone-20", results[1].commit)]
    for branch in BRANCHES:  # one commit per snapshot on top of the repo's initial commit
        assert commit_count(api, repo, branch) == 2
        files = set(api.list_repo_files(repo, revision=branch))
        assert {"config.json", "model.safetensors", "trainer_state.json", "tokenizer.json",
                "modeling_tinyllama.py", "configuration_smallllm.py"} <= files
        assert not files & {"optimizer.pt", "data_state.json", "README.md", REVISIONS_FILE}
    main_files = set(api.list_repo_files(repo))
    assert {"README.md", REVISIONS_FILE, "model.safetensors"} <= main_files
    revisions = open(api.hf_hub_download(repo, REVISIONS_FILE, cache_dir=tmp_path)).read().splitlines()
    assert revisions == BRANCHES

    listed = list_snapshots(repo, endpoint=endpoint, token=token)
    assert [(s.branch, s.step) for s in listed] == list(zip(BRANCHES, STEPS, strict=True))
    exact = list_snapshots(repo, endpoint=endpoint, token=token, exact_tokens=True)
    assert [s.tokens for s in exact] == [s * TOKENS_PER_STEP for s in STEPS]

    for step in STEPS:
        model = load_snapshot(repo, step=step, endpoint=endpoint, token=token, cache_dir=tmp_path / "cache")
        expected = load_file(run_dir / f"checkpoint-{step}" / "model.safetensors")
        state = model.state_dict()
        assert type(model).__module__ == "hf_smallllm.models.modeling_tinyllama"  # local classes, not remote code
        for name, tensor in expected.items():
            assert torch.equal(state[name], tensor), (step, name)
    nearest = load_snapshot(repo, step=24, match="nearest", endpoint=endpoint, token=token, cache_dir=tmp_path / "c")
    assert torch.equal(nearest.model.embed_tokens.weight,
                       load_file(run_dir / "checkpoint-20" / "model.safetensors")["model.embed_tokens.weight"])
    with pytest.raises(ValueError, match=r"no snapshot at step 24; snapshots exist at steps \[10, 20, 30\]"):
        load_snapshot(repo, step=24, endpoint=endpoint, token=token, cache_dir=tmp_path / "c")

    # re-publishing what is there is a no-op: no new commits anywhere
    before = {b: commit_count(api, repo, b) for b in BRANCHES + ["main"]}
    again = publish_run(run_dir, repo, endpoint=endpoint, token=token, tags={20: "milestone-20"}, progress=False)
    assert {r.status for r in again} == {"unchanged"}
    assert {b: commit_count(api, repo, b) for b in BRANCHES + ["main"]} == before


def test_interrupted_publish_is_completed_by_a_rerun(hub, run_dir, monkeypatch):
    endpoint, token = hub
    repo = "tests/interrupted"
    real_commit = HfApi.create_commit
    calls = {"n": 0}

    def flaky_commit(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second snapshot: its branch exists, its commit never lands
            raise ConnectionError("connection reset by peer")
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(HfApi, "create_commit", flaky_commit)
    with pytest.raises(PublishError, match="checkpoint-20 to tests/interrupted .* was interrupted .*re-run"):
        publish_run(run_dir, repo, endpoint=endpoint, token=token, progress=False)
    api = HfApi(endpoint=endpoint, token=token)
    assert BRANCHES[1] in {b.name for b in api.list_repo_refs(repo).branches}
    assert "model.safetensors" not in api.list_repo_files(repo, revision=BRANCHES[1])  # half-made branch: empty

    monkeypatch.setattr(HfApi, "create_commit", real_commit)
    results = publish_run(run_dir, repo, endpoint=endpoint, token=token, progress=False)
    assert [r.status for r in results] == ["unchanged", "completed", "published", "published"]
    assert commit_count(api, repo, BRANCHES[1]) == 2
    assert "model.safetensors" in api.list_repo_files(repo, revision=BRANCHES[1])


def test_clear_errors(hub, run_dir, tmp_path):
    endpoint, token = hub
    with pytest.raises(PublishError, match="rejected the token"):
        publish_run(run_dir, "tests/bad-token", endpoint=endpoint, token="hf_not_a_token", progress=False)
    with pytest.raises(PublishError, match="repository tests/never-created does not exist"):
        publish_run(run_dir, "tests/never-created", endpoint=endpoint, token=token, create=False, progress=False)
    with pytest.raises(PublishError, match="cannot reach the Hub at http://127.0.0.1:9"):
        HubPublisher("tests/x", endpoint="http://127.0.0.1:9", token=token).connect()  # nothing listens on port 9
    with pytest.raises(ValueError, match="must be 'owner/name'"):
        HubPublisher("no-owner", endpoint=endpoint, token=token)

    # a branch of the same name with other content, and a tag where a branch should go
    repo = "tests/collisions"
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo)
    api.create_branch(repo, branch=BRANCHES[0])
    api.create_commit(repo, [CommitOperationAdd("config.json", b"{}")], commit_message="someone else's",
                      revision=BRANCHES[0])
    publisher = HubPublisher(repo, endpoint=endpoint, token=token)
    with pytest.raises(RevisionCollisionError, match=f"branch '{BRANCHES[0]}' of {repo} already exists with different"):
        publisher.publish_snapshot(run_dir / "checkpoint-10")
    replaced = HubPublisher(repo, endpoint=endpoint, token=token, overwrite=True).publish_snapshot(
        run_dir / "checkpoint-10")
    assert replaced.status == "replaced"
    api.create_tag(repo, tag=BRANCHES[1], revision="main")
    with pytest.raises(RevisionCollisionError, match="already has a tag named"):
        publisher.publish_snapshot(run_dir / "checkpoint-20")
    publisher.publish_snapshot(run_dir / "checkpoint-30", tag="v1")
    with pytest.raises(RevisionCollisionError, match="tag 'v1' .* already exists and points to"):
        publisher.ensure_tag("v1", replaced.commit)
    with pytest.raises(FileNotFoundError, match="has no trainer_state.json"):
        publisher.publish_snapshot(tmp_path)


def test_cli_publish_and_snapshots(hub, run_dir, capsys, tmp_path):
    endpoint, token = hub
    common = ["--endpoint", endpoint, "--token", token]
    assert cli_main(["publish", str(run_dir), "tests/cli-run", "--branch-template", "tinyllama", "--every", "20",
                     "--tag", "20=halfway", "--license", "mit", *common]) == 0
    out = capsys.readouterr().out
    assert "tests/cli-run@step-0.02k-token-0.0000819B: published" in out and "tests/cli-run@main: published" in out
    assert cli_main(["snapshots", "tests/cli-run", *common]) == 0
    table = capsys.readouterr().out
    assert "step-0.02k-token-0.0000819B" in table and "20" in table
    assert cli_main(["snapshots", "tests/cli-run", "--json", "--exact-tokens", *common]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows == [{"branch": "step-0.02k-token-0.0000819B", "step": 20, "tokens": 20 * TOKENS_PER_STEP,
                     "commit": rows[0]["commit"]}]
    card = open(HfApi(endpoint=endpoint).hf_hub_download("tests/cli-run", "README.md", cache_dir=tmp_path)).read()
    assert "license: mit" in card

    assert cli_main(["publish", str(run_dir), "tests/cli-run", "--token", "bad", "--endpoint", endpoint]) == 2
    assert "rejected the token" in capsys.readouterr().err
    assert cli_main(["snapshots", "tests/nope", *common]) == 2
    assert "repository tests/nope not found" in capsys.readouterr().err
    assert cli_main(["publish", str(tmp_path), "tests/x", *common]) == 2
    assert "no checkpoint-<step>/ folders" in capsys.readouterr().err


def test_final_of_a_fine_tune_carries_base_model(hub, tmp_path):
    endpoint, token = hub
    folder = make_checkpoint(tmp_path / "sft", 5)
    (folder / "trainer_state.json").unlink()  # a plain save_pretrained folder
    result = HubPublisher("tests/fine-tune", endpoint=endpoint, token=token).publish_final(
        folder, card_options={"base_model": "tests/full-run", "datasets": ["tests/chat-data"]})
    assert result.status == "published" and result.step == 0
    card = open(HfApi(endpoint=endpoint).hf_hub_download("tests/fine-tune", "README.md", cache_dir=tmp_path)).read()
    assert "base_model: tests/full-run" in card and "- tests/chat-data" in card
    assert "no intermediate checkpoints" in card


def test_links_out_of_the_run_are_never_uploaded(hub, tmp_path):
    """P1: a checkpoint file that links outside the run is refused (before, /etc/passwd was uploaded); a link to
    another file of the run is uploaded as that file."""
    from hf_smallllm.hub import HubPublishCallback

    endpoint, token = hub
    run = tmp_path / "run"
    checkpoint = make_checkpoint(run / "checkpoint-10", 10)
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host secret")
    (run / "shared-notes.txt").write_text("notes of the run")
    (checkpoint / "notes.txt").symlink_to(run / "shared-notes.txt")
    repo = "tests/symlinks"
    api = HfApi(endpoint=endpoint, token=token)
    result = HubPublisher(repo, endpoint=endpoint, token=token).publish_snapshot(checkpoint)
    notes = api.hf_hub_download(repo, "notes.txt", revision=result.revision, cache_dir=tmp_path / "cache")
    with open(notes) as f:
        assert f.read() == "notes of the run"

    (checkpoint / "leak.txt").symlink_to(secret)
    with pytest.raises(PublishError, match=r"leak.txt is a symlink to .*host-secret.txt, outside the run folder"):
        publish_run(run, repo, endpoint=endpoint, token=token, progress=False, overwrite=True)
    with pytest.raises(PublishError, match="outside the run folder"):
        HubPublisher(repo, endpoint=endpoint, token=token).publish_final(checkpoint)
    # during training the callback reports it and carries on
    from types import SimpleNamespace

    logged = []
    callback = HubPublishCallback(repo, endpoint=endpoint, token=token, output_dir=run, log=logged.append)
    callback.on_save(SimpleNamespace(output_dir=str(run)), SimpleNamespace(global_step=10, is_world_process_zero=True),
                     None)
    assert callback.failures and "outside the run folder" in callback.failures[0][1] and "NOT published" in logged[0]
    files = {path for branch in api.list_repo_refs(repo).branches
             for path in api.list_repo_files(repo, revision=branch.name)}
    assert "leak.txt" not in files


def test_an_interrupted_publish_is_one_line_and_exit_2_then_a_rerun_completes(hub, run_dir, capsys, monkeypatch):
    """The server goes away in the middle of the upload: one line naming the step and the re-run, exit 2."""
    import httpx2

    endpoint, token = hub
    common = ["--endpoint", endpoint, "--token", token]
    original = HfApi.create_commit
    calls = []

    def dropped(self, *args, **kwargs):
        calls.append(kwargs.get("revision"))
        if len(calls) == 2:
            raise httpx2.RemoteProtocolError("Server disconnected without sending a response.")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(HfApi, "create_commit", dropped)
    assert cli_main(["publish", str(run_dir), "tests/interrupted-cli", *common]) == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if "error" in line]  # the rest is the progress bar
    assert len(errors) == 1 and "Traceback" not in stderr
    err = errors[0]
    assert "snapshot" in err and "checkpoint-20" in err and "RemoteProtocolError" in err and "re-run" in err
    monkeypatch.setattr(HfApi, "create_commit", original)
    assert cli_main(["publish", str(run_dir), "tests/interrupted-cli", *common]) == 0
    assert "tests/interrupted-cli@main: published" in capsys.readouterr().out


def test_publishing_never_modifies_the_run_folder(hub, tmp_path):
    """Issue 31: a user's revisions.txt inside a checkpoint was overwritten through the stage's hard link. Every
    file of the run (contents and modification times) is the same after publishing as before."""
    endpoint, token = hub
    run = tmp_path / "run"
    checkpoint = make_checkpoint(run / "checkpoint-10", 10)
    (checkpoint / REVISIONS_FILE).write_text("my own notes\n")
    (checkpoint / "README.md").write_text("my own readme\n")

    def snapshot():
        return {p.relative_to(run): (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file()}

    before = snapshot()
    publish_run(run, "tests/untouched", endpoint=endpoint, token=token, progress=False)
    assert snapshot() == before
