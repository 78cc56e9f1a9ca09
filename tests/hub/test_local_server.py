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
    feature = refs.branches[[b.name for b in refs.branches].index("feature")]
    assert head.headers["X-Repo-Commit"] == feature.target_commit
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

    from hf_smallllm.testing import hub_server as local_server

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


def commit_lines(endpoint: str, token: str, repo: str, lines: list, revision: str = "main"):
    import json

    body = "\n".join(json.dumps(line) for line in lines).encode()
    return httpx2.post(f"{endpoint}/api/models/{repo}/commit/{revision}", content=body,
                       headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"})


@pytest.mark.parametrize("oid", ["/etc/passwd", "../state.json", "../../../../etc/hostname", "A" * 64, "0" * 64, 5])
def test_lfs_oid_cannot_name_a_host_file(hub, oid):
    """S1: a commit's lfsFile oid must be a sha256 of an uploaded blob; before, any host file could be served."""
    endpoint, token = hub
    repo = "tests/lfs-oid"
    HfApi(endpoint=endpoint, token=token).create_repo(repo, exist_ok=True)
    reply = commit_lines(endpoint, token, repo, [{"key": "header", "value": {"summary": "leak"}},
                                                 {"key": "lfsFile", "value": {"path": "leak.txt", "oid": oid}}])
    assert reply.status_code == 400 and "error" in reply.json()
    assert httpx2.get(f"{endpoint}/{repo}/resolve/main/leak.txt").status_code == 404


def test_private_repos_need_a_token(hub, tmp_path):
    """S2: without a valid token a private repo answers like a missing one (401 RepoNotFound), as the Hub does."""
    endpoint, token = hub
    owner = HfApi(endpoint=endpoint, token=token)
    repo = "tests/private-repo"
    owner.create_repo(repo, private=True, exist_ok=True)
    owner.create_commit(repo, [CommitOperationAdd("secret.txt", b"secret")], commit_message="add")
    anonymous = HfApi(endpoint=endpoint, token=False)
    for call in (lambda: anonymous.repo_info(repo), lambda: anonymous.list_repo_refs(repo),
                 lambda: anonymous.list_repo_files(repo), lambda: anonymous.list_repo_commits(repo),
                 lambda: anonymous.hf_hub_download(repo, "secret.txt", cache_dir=tmp_path)):
        with pytest.raises(RepositoryNotFoundError):
            call()
    for url in (f"{endpoint}/{repo}/resolve/main/secret.txt", f"{endpoint}/api/models/{repo}",
                f"{endpoint}/api/models/{repo}/tree/main"):
        reply = httpx2.get(url)
        assert reply.status_code == 401 and reply.headers["X-Error-Code"] == "RepoNotFound"
        assert b"secret.txt" not in reply.content and reply.content != b"secret"
    with open(owner.hf_hub_download(repo, "secret.txt", cache_dir=tmp_path)) as f:
        assert f.read() == "secret"
    assert owner.repo_info(repo).private


def test_the_public_default_token_stays_on_this_machine(tmp_path, capsys):
    from hf_smallllm.testing import hub_server as local_server

    with pytest.raises(SystemExit) as exit_info:
        local_server.main(["--root", str(tmp_path), "--host", "0.0.0.0"])
    assert exit_info.value.code == 2 and "--host 0.0.0.0: the default token" in capsys.readouterr().err
