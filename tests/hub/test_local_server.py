"""The local Hub server answers the real huggingface_hub client the way the Hub does."""

import httpx2
import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError


def test_protocol_round_trip(hub, tmp_path):
    endpoint, token = hub
    api = HfApi(endpoint=endpoint, token=token)
    repo = "tests/server-round-trip"
    api.create_repo(repo)
    api.create_repo(repo, exist_ok=True)
    with pytest.raises(HfHubHTTPError, match="409"):
        api.create_repo(repo)
    api.create_commit(repo, [CommitOperationAdd("a/b.txt", b"hello world")], commit_message="add")
    api.create_branch(repo, branch="feature")
    api.create_commit(repo, [CommitOperationAdd("a/b.txt", b"changed")], commit_message="change", revision="feature")
    api.create_tag(repo, tag="v1", revision="main")
    refs = api.list_repo_refs(repo)
    assert {b.name for b in refs.branches} == {"main", "feature"} and [t.name for t in refs.tags] == ["v1"]
    assert sorted(api.list_repo_files(repo, revision="feature")) == [".gitattributes", "a/b.txt"]
    assert [c.title for c in api.list_repo_commits(repo, revision="feature")] == ["change", "add", "initial commit"]
    path = api.hf_hub_download(repo, "a/b.txt", revision="v1", cache_dir=tmp_path)
    assert open(path).read() == "hello world"
    # resolve: commit header, etag, ranges
    url = f"{endpoint}/{repo}/resolve/feature/a/b.txt"
    head = httpx2.head(url)
    assert head.headers["X-Repo-Commit"] == refs.branches[[b.name for b in refs.branches].index("feature")].target_commit
    assert head.headers["ETag"].strip('"') == api.get_paths_info(repo, ["a/b.txt"], revision="feature")[0].blob_id
    assert httpx2.get(url, headers={"Range": "bytes=2-4"}).content == b"ang"
    with pytest.raises(RevisionNotFoundError):
        api.hf_hub_download(repo, "a/b.txt", revision="nope", cache_dir=tmp_path)
    with pytest.raises(EntryNotFoundError):
        api.hf_hub_download(repo, "missing.txt", cache_dir=tmp_path)
    with pytest.raises(RepositoryNotFoundError):
        api.list_repo_refs("tests/does-not-exist")


def test_tokens_are_checked(hub):
    endpoint, token = hub
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=endpoint, token="hf_wrong").create_repo("tests/bad-token")
    assert err.value.response.status_code == 401
    assert HfApi(endpoint=endpoint, token=token).whoami()["name"] == "local-user"


def test_stale_parent_commit_is_refused(hub):
    endpoint, token = hub
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo("tests/parent", exist_ok=True)
    first = api.list_repo_refs("tests/parent").branches[0].target_commit
    api.create_commit("tests/parent", [CommitOperationAdd("x", b"1")], commit_message="x")
    with pytest.raises(HfHubHTTPError, match="412"):
        api.create_commit("tests/parent", [CommitOperationAdd("y", b"2")], commit_message="y", parent_commit=first)


def test_server_command_line(hub, tmp_path):
    import subprocess
    import sys

    from hf_smallllm.hub import local_server

    # run as a file: the server needs only the standard library and PyYAML, so it starts in a blink
    process = subprocess.Popen([sys.executable, local_server.__file__, "--root", str(tmp_path),
                                "--port", "0", "--token", "hf_cli"], stdout=subprocess.PIPE, text=True)
    try:
        ready = process.stdout.readline().split()
        assert ready[0] == "READY"
        endpoint = f"http://127.0.0.1:{int(ready[1])}"
        assert HfApi(endpoint=endpoint, token="hf_cli").whoami()["name"] == "local-user"
        HfApi(endpoint=endpoint, token="hf_cli").create_repo("cli/repo")
        assert (tmp_path / "state.json").exists()
    finally:
        process.terminate()
        process.wait(timeout=30)
