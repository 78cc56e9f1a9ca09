"""The local Hub server answers malformed requests with a 4xx JSON error and keeps serving; validates names, paths
and ranges as the Hub does; and takes large files through the LFS basic transfer (issue 22)."""

import http.client
import json
from urllib.parse import urlsplit

import pytest
from huggingface_hub import CommitOperationAdd, HfApi

from hf_smallllm.testing.hub_server import DEFAULT_TOKEN, parse_range, start_in_thread

AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
REPO = "tests/robust"


def raw(endpoint: str, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    """One request over a fresh connection, headers exactly as given (Content-Length included)."""
    address = urlsplit(endpoint)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if "Content-Length" not in (headers or {}):
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        if body:
            connection.send(body)
        reply = connection.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        connection.close()


@pytest.fixture
def repo(hub):
    endpoint, token = hub
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(REPO, exist_ok=True)
    api.create_commit(REPO, [CommitOperationAdd("data.txt", b"0123456789")], commit_message="data")
    return endpoint


def ndjson(*lines) -> bytes:
    return b"\n".join(json.dumps(line).encode() for line in lines)


HEADER = {"key": "header", "value": {"summary": "s"}}
MALFORMED = {
    "commit without revision": ("POST", f"/api/models/{REPO}/commit", ndjson(HEADER), {}, 400),
    "preupload without revision": ("POST", f"/api/models/{REPO}/preupload", b'{"files": []}', {}, 400),
    "tree without revision": ("GET", f"/api/models/{REPO}/tree", b"", {}, 400),
    "commit line not an object": ("POST", f"/api/models/{REPO}/commit/main", b"[1, 2]\n", {}, 400),
    "commit line not JSON": ("POST", f"/api/models/{REPO}/commit/main", b"{nope\n", {}, 400),
    "commit value not an object": ("POST", f"/api/models/{REPO}/commit/main",
                                   ndjson(HEADER, {"key": "file", "value": 5}), {}, 400),
    "commit bad base64": ("POST", f"/api/models/{REPO}/commit/main",
                          ndjson(HEADER, {"key": "file", "value": {"path": "x", "content": "%%%"}}), {}, 400),
    "commit unknown operation": ("POST", f"/api/models/{REPO}/commit/main",
                                 ndjson(HEADER, {"key": "chmod", "value": {"path": "x"}}), {}, 400),
    "commit path escapes": ("POST", f"/api/models/{REPO}/commit/main",
                            ndjson(HEADER, {"key": "file", "value": {"path": "../../etc/evil", "content": "eA=="}}),
                            {}, 400),
    "commit absolute path": ("POST", f"/api/models/{REPO}/commit/main",
                             ndjson(HEADER, {"key": "file", "value": {"path": "/etc/evil", "content": "eA=="}}),
                             {}, 400),
    "commit .git path": ("POST", f"/api/models/{REPO}/commit/main",
                         ndjson(HEADER, {"key": "file", "value": {"path": ".git/config", "content": "eA=="}}), {}, 400),
    "commit header summary not a string": ("POST", f"/api/models/{REPO}/commit/main",
                                           ndjson({"key": "header", "value": {"summary": [1]}}), {}, 400),
    "create body a JSON list": ("POST", "/api/repos/create", b"[1, 2]", {}, 400),
    "create body not JSON": ("POST", "/api/repos/create", b"name=x", {}, 400),
    "create name null": ("POST", "/api/repos/create", b'{"name": null}', {}, 400),
    "create name traversal": ("POST", "/api/repos/create", b'{"name": "../../x"}', {}, 400),
    "create organization traversal": ("POST", "/api/repos/create", b'{"name": "x", "organization": ".."}', {}, 400),
    "create name with double dash": ("POST", "/api/repos/create", b'{"name": "a--b"}', {}, 400),
    "create unknown type": ("POST", "/api/repos/create", b'{"name": "x", "type": "wiki"}', {}, 400),
    "Content-Length abc": ("POST", "/api/repos/create", b"", {"Content-Length": "abc"}, 400),
    "Content-Length -5": ("POST", "/api/repos/create", b"", {"Content-Length": "-5"}, 400),
    "Content-Length huge": ("POST", "/api/repos/create", b"", {"Content-Length": "999999999999999"}, 413),
    "chunked body": ("POST", "/api/repos/create", b"", {"Transfer-Encoding": "chunked"}, 411),
    "preupload files not a list": ("POST", f"/api/models/{REPO}/preupload/main", b'{"files": 3}', {}, 400),
    "preupload negative size": ("POST", f"/api/models/{REPO}/preupload/main",
                                b'{"files": [{"path": "a", "size": -1, "sample": ""}]}', {}, 400),
    "paths-info paths not a list": ("POST", f"/api/models/{REPO}/paths-info/main", b'{"paths": 3}',
                                    {"Content-Type": "application/json"}, 400),
    "branch with a bad name": ("POST", f"/api/models/{REPO}/branch/a..b", b"{}", {}, 400),
    "tag body a list": ("POST", f"/api/models/{REPO}/tag/main", b"[]", {}, 400),
    "lfs batch not an upload": ("POST", f"/{REPO}.git/info/lfs/objects/batch", b'{"operation": "download"}', {}, 400),
    "lfs upload without a ticket": ("PUT", f"/api/lfs-upload/nope/{'0' * 64}", b"x", {}, 403),
    "validate-yaml content not a string": ("POST", "/api/validate-yaml", b'{"content": 5}', {}, 400),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_requests_get_a_json_error_and_the_server_keeps_serving(repo, case):
    method, path, body, headers, status = MALFORMED[case]
    got, reply_headers, content = raw(repo, method, path, body, {**AUTH, **headers})
    assert got == status, content
    assert "error" in json.loads(content) and reply_headers.get("X-Error-Message")
    assert raw(repo, "GET", f"/api/models/{REPO}", headers=AUTH)[0] == 200  # still serving
    assert HfApi(endpoint=repo, token=DEFAULT_TOKEN).list_repo_files(REPO) == [".gitattributes", "data.txt"]


@pytest.mark.parametrize(("header", "status", "content"), [
    ("bytes=2-4", 206, b"234"), ("bytes=7-", 206, b"789"), ("bytes=-3", 206, b"789"), ("bytes=5-100", 206, b"56789"),
    ("bytes=5-2", 416, None), ("bytes=99-", 416, None), ("bytes=-0", 416, None), ("bytes=abc", 416, None),
    ("bytes=0-1,3-4", 416, None), ("bytes=-", 416, None), ("items=0-1", 416, None)])
def test_ranges(repo, header, status, content):
    got, headers, body = raw(repo, "GET", f"/{REPO}/resolve/main/data.txt", headers={"Range": header})
    assert got == status
    if content is not None:
        assert body == content
    else:
        assert headers["Content-Range"] == "bytes */10"


def test_parse_range_edges():
    assert parse_range("bytes=0-0", 1) == (0, 0)
    assert parse_range("bytes=0-", 0) is None  # nothing to serve of an empty file


def test_served_repos_stay_downloadable(repo, tmp_path):
    """The repo that a '../../etc/evil' path used to break still downloads whole with snapshot_download."""
    from huggingface_hub import snapshot_download

    folder = snapshot_download(REPO, endpoint=repo, token=DEFAULT_TOKEN, cache_dir=tmp_path)
    assert (tmp_path / folder / "data.txt").read_text() == "0123456789"


@pytest.fixture
def lfs_hub(tmp_path, monkeypatch):
    """A server that answers "lfs" for files of 1 KiB or more (and .safetensors), as the Hub does for weights; the
    client's Xet path is switched off (hf_xet talks only to the Hub's Xet storage)."""
    from huggingface_hub import constants

    server = start_in_thread(tmp_path / "lfs-root", lfs=True, lfs_threshold=1024)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        server.url + "/{repo_id}/resolve/{revision}/{filename}")
    yield server
    server.shutdown()
    server.server_close()


def count_lfs_uploads(server) -> int:
    return sum(len(r.get("lfs_objects", {})) for r in server.store.state["repos"].values())


def test_lfs_basic_transfer_with_the_real_client(lfs_hub, tmp_path):
    api = HfApi(endpoint=lfs_hub.url, token=DEFAULT_TOKEN)
    api.create_repo("tests/lfs")
    big, small = bytes(range(256)) * 64, b"small text"
    api.create_commit("tests/lfs", [CommitOperationAdd("weights.bin", big), CommitOperationAdd("notes.txt", small)],
                      commit_message="add")
    entries = {e.path: e for e in api.list_repo_tree("tests/lfs", recursive=True)}
    assert entries["weights.bin"].lfs is not None and entries["weights.bin"].lfs.size == len(big)
    assert entries["notes.txt"].lfs is None
    assert count_lfs_uploads(lfs_hub) == 1
    with open(api.hf_hub_download("tests/lfs", "weights.bin", cache_dir=tmp_path), "rb") as f:
        assert f.read() == big
    # unchanged: the client compares the sha256 the preupload reports and sends nothing new
    head = api.list_repo_refs("tests/lfs").branches[0].target_commit
    api.create_commit("tests/lfs", [CommitOperationAdd("weights.bin", big)], commit_message="same")
    assert api.list_repo_refs("tests/lfs").branches[0].target_commit in (head, api.repo_info("tests/lfs").sha)
    assert count_lfs_uploads(lfs_hub) == 1
    # another repo cannot reference this repo's object without uploading it
    api.create_repo("tests/lfs-other")
    reply = raw(lfs_hub.url, "POST", "/api/models/tests/lfs-other/commit/main", ndjson(
        HEADER, {"key": "lfsFile", "value": {"path": "stolen.bin", "algo": "sha256",
                                              "oid": entries["weights.bin"].lfs.sha256}}), AUTH)
    assert reply[0] == 400 and b"never uploaded to this repo" in reply[2]


def test_lfs_upload_must_match_its_announced_hash(lfs_hub):
    HfApi(endpoint=lfs_hub.url, token=DEFAULT_TOKEN).create_repo("tests/lfs-hash")
    batch = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": "a" * 64, "size": 3}]}
    status, _, body = raw(lfs_hub.url, "POST", "/tests/lfs-hash.git/info/lfs/objects/batch",
                          json.dumps(batch).encode(), AUTH)
    assert status == 200
    upload = json.loads(body)["objects"][0]["actions"]["upload"]["href"]
    status, _, body = raw(lfs_hub.url, "PUT", urlsplit(upload).path, b"abc")
    assert status == 400 and b"announced" in body
    assert not (lfs_hub.store.root / "blobs" / ("a" * 64)).exists()


def test_publishing_a_run_through_lfs(lfs_hub, run_dir, tmp_path):
    from hf_smallllm.hub import load_snapshot, publish_run

    results = publish_run(run_dir, "tests/lfs-run", endpoint=lfs_hub.url, token=DEFAULT_TOKEN, progress=False)
    assert [r.status for r in results] == ["published"] * 4
    api = HfApi(endpoint=lfs_hub.url, token=DEFAULT_TOKEN)
    weights = [e for e in api.list_repo_tree("tests/lfs-run", revision=results[0].revision, recursive=True)
               if e.path == "model.safetensors"]
    assert weights and weights[0].lfs is not None
    uploads = count_lfs_uploads(lfs_hub)
    again = publish_run(run_dir, "tests/lfs-run", endpoint=lfs_hub.url, token=DEFAULT_TOKEN, progress=False)
    assert [r.status for r in again] == ["unchanged"] * 4 and count_lfs_uploads(lfs_hub) == uploads
    model = load_snapshot("tests/lfs-run", revision=results[0].revision, endpoint=lfs_hub.url, token=DEFAULT_TOKEN,
                          cache_dir=tmp_path)
    assert model.config.model_type


@pytest.fixture
def two_users(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    server = start_in_thread(tmp_path / "two-users", tokens={"hf_alice": "alice", "hf_bob": "bob"})
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # only this local server is addressed
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    yield server.url
    server.shutdown()


def test_a_token_cannot_write_in_another_users_namespace(two_users):
    """Issue 31: user A's token created repos in B's namespace and deleted B's private repo."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    alice, bob = HfApi(endpoint=two_users, token="hf_alice"), HfApi(endpoint=two_users, token="hf_bob")
    assert alice.whoami()["name"] == "alice" and bob.whoami()["name"] == "bob"
    bob.create_repo("bob/private", private=True)
    bob.create_commit("bob/private", [CommitOperationAdd("secret.txt", b"bob's")], commit_message="secret")
    for attempt in (lambda: alice.create_repo("bob/planted"),
                    lambda: alice.delete_repo("bob/private"),
                    lambda: alice.create_commit("bob/private", [CommitOperationAdd("x", b"x")], commit_message="x")):
        with pytest.raises((HfHubHTTPError, RepositoryNotFoundError)) as caught:
            attempt()
        assert caught.value.response.status_code in (401, 403)
    with pytest.raises(RepositoryNotFoundError):
        alice.list_repo_files("bob/private")
    assert bob.list_repo_files("bob/private") == [".gitattributes", "secret.txt"]
    alice.create_repo("alice/mine")  # her own namespace works
    alice.create_repo("shared-org/project")  # and namespaces no user of this server owns


@pytest.mark.parametrize("method, path", [("POST", "/api/repos/create"), ("POST", f"/api/models/{REPO}/commit/main"),
                                          ("PUT", "/api/lfs-upload/not-a-ticket/" + "0" * 64)])
def test_unauthenticated_bodies_are_refused_from_the_headers(repo, method, path):
    """Issue 31: a 48 MB body without a token was read and spooled to disk before the 401/403."""
    import socket
    import time

    address = urlsplit(repo)
    size = 48 << 20
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
        connection.sendall(b"\0" * (64 << 10))  # a little of the body: the answer must not wait for the rest
        start = time.monotonic()
        reply = connection.recv(4096)
        assert time.monotonic() - start < 10
    status = int(reply.split()[1])
    assert status in (401, 403), reply[:200]


def test_json_nested_too_deep_is_a_400(repo):
    body = b"[" * 200_000 + b"]" * 200_000
    status, _, reply = raw(repo, "POST", "/api/repos/create", body, {**AUTH, "Content-Type": "application/json"})
    assert status == 400 and b"nested too deeply" in reply
