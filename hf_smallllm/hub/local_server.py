"""A local server that speaks the Hugging Face Hub's HTTP protocol, for tests and offline demos.

It implements the part of the protocol that `huggingface_hub` (2.x) and `transformers` (5.x) use to publish and
load models: whoami, repo create/delete/info, preupload (every file answered "regular", so uploads travel base64
inside the NDJSON commit and neither LFS nor Xet is needed), NDJSON commits with `parentCommit` checks, branches,
tags, refs, tree, paths-info, commits, `validate-yaml`, and `resolve` downloads with `X-Repo-Commit`, `ETag` and
`Range`. Errors carry the Hub's `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) so the client
raises its usual exception types. Which endpoints the client calls was established in
`/work/shared/reference/ECOSYSTEM.md` section 1 (reading huggingface_hub 2.4 against a working server).

Storage is plain files under `root`: file contents by sha256 in `blobs/`, repos, commits, branches and tags in
`state.json` (rewritten atomically after every change). Tokens: a request carrying a token that is not in `tokens`
gets 401; writes need a valid token; reads of public repos work without one, private repos answer 401 `RepoNotFound`
without one (as the Hub does). Binds 127.0.0.1 unless told otherwise, and refuses another address while the only
token is the published default.

    python -m hf_smallllm.hub.local_server --root DIR --port 0      # prints "READY <port>"
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

DEFAULT_TOKEN = "hf_local_token"
DEFAULT_USER = "local-user"
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
SHA256 = re.compile(r"[0-9a-f]{64}")
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_oid(data: bytes) -> str:
    """The git object id of a file, which is what the Hub reports as `oid` for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """An error reply: HTTP status, message, the Hub's `X-Error-Code`, and extra headers."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class HubStore:
    """Repos, commits, refs and blobs under one folder; every method is thread-safe."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.state_path = self.root / "state.json"
        self.lock = threading.RLock()
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {"repos": {}}

    # storage -------------------------------------------------------------------------------------------------
    # The two atomic writes below stay here rather than using hf_smallllm.runfiles: the server also runs as a plain
    # file (`python local_server.py`, standard library + PyYAML only) so that it starts without the package's imports.
    def _save(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.state_path)

    def put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.root / "blobs" / sha
        if not path.exists():
            tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return sha

    def blob_path(self, sha: str) -> Path:
        if not SHA256.fullmatch(sha):
            raise HubError(400, f"{sha!r} is not a sha256")
        return self.root / "blobs" / sha

    # repos ---------------------------------------------------------------------------------------------------
    @staticmethod
    def key(repo_type: str, repo_id: str) -> str:
        return f"{repo_type}/{repo_id}"

    def repo(self, repo_type: str, repo_id: str) -> dict:
        repo = self.state["repos"].get(self.key(repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository Not Found for url: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> bool:
        with self.lock:
            if self.key(repo_type, repo_id) in self.state["repos"]:
                return False
            repo = {"private": private, "commits": {}, "branches": {}, "tags": {}, "created": _now()}
            self.state["repos"][self.key(repo_type, repo_id)] = repo
            files = {".gitattributes": self._file_entry(GITATTRIBUTES)}
            repo["branches"]["main"] = self._add_commit(repo, None, "initial commit", "", files)
            self._save()
            return True

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        with self.lock:
            self.repo(repo_type, repo_id)
            del self.state["repos"][self.key(repo_type, repo_id)]
            self._save()

    def _file_entry(self, data: bytes) -> dict:
        return {"sha256": self.put_blob(data), "oid": git_blob_oid(data), "size": len(data)}

    def _add_commit(self, repo: dict, parent: str | None, title: str, description: str, files: dict) -> str:
        commit_id = hashlib.sha1(f"{uuid.uuid4()}{time.time()}".encode()).hexdigest()
        repo["commits"][commit_id] = {"parent": parent, "title": title, "description": description,
                                      "files": files, "date": _now()}
        return commit_id

    def resolve(self, repo: dict, revision: str) -> str:
        """A branch, tag or (full or at least 7-character) commit id -> commit id."""
        revision = unquote(revision)
        if revision in repo["branches"]:
            return repo["branches"][revision]
        if revision in repo["tags"]:
            return repo["tags"][revision]
        if revision.startswith("refs/heads/") and revision[11:] in repo["branches"]:
            return repo["branches"][revision[11:]]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [c for c in repo["commits"] if c.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def files_at(self, repo: dict, revision: str) -> tuple[str, dict]:
        commit_id = self.resolve(repo, revision)
        return commit_id, repo["commits"][commit_id]["files"]

    def commit(self, repo_type: str, repo_id: str, revision: str, header: dict, operations: list[dict]) -> str:
        with self.lock:
            repo = self.repo(repo_type, repo_id)
            branch = unquote(revision)
            if branch not in repo["branches"]:
                raise HubError(404, f"Invalid rev id: {branch} (commits go to an existing branch)", "RevisionNotFound")
            head = repo["branches"][branch]
            parent = header.get("parentCommit")
            if parent and parent != head:
                raise HubError(412, f"A commit has happened since. Please refresh and try again. "
                                    f"(parent {parent} is not the head {head} of {branch})")
            files = dict(repo["commits"][head]["files"])
            for op in operations:
                key, value = op["key"], op["value"]
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                    files[value["path"]] = self._file_entry(base64.b64decode(value["content"]))
                elif key == "lfsFile":
                    sha = value["oid"]
                    # The oid names a file under blobs/: anything but a sha256 would let a commit point at any
                    # file of the host ("/etc/passwd", "../state.json").
                    if not isinstance(sha, str) or not SHA256.fullmatch(sha):
                        raise HubError(400, f"lfsFile {value['path']!r}: oid {sha!r} is not a sha256 (64 lowercase "
                                            "hex characters)")
                    if not self.blob_path(sha).is_file():
                        raise HubError(400, f"LFS object {sha} of {value['path']} was never uploaded")
                    data = self.blob_path(sha).read_bytes()
                    files[value["path"]] = {"sha256": sha, "oid": git_blob_oid(data), "size": len(data)}
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise HubError(404, f"File {value['path']} does not exist", "EntryNotFound")
                    del files[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: f for p, f in files.items() if not p.startswith(prefix)}
                else:
                    raise HubError(400, f"unknown commit operation {key!r}")
            commit_id = self._add_commit(repo, head, header.get("summary", ""), header.get("description", ""), files)
            repo["branches"][branch] = commit_id
            self._save()
            return commit_id

    def create_ref(self, repo_type: str, repo_id: str, kind: str, name: str, revision: str | None,
                   empty: bool = False) -> None:
        with self.lock:
            repo = self.repo(repo_type, repo_id)
            if name in repo["branches"] or name in repo["tags"]:
                what = "Reference" if kind == "tags" else "Branch"
                raise HubError(409, f"{what} already exists: {name}")
            if empty:
                target = self._add_commit(repo, None, "empty branch", "", {})
            else:
                target = self.resolve(repo, revision or "main")
            repo[kind][name] = target
            self._save()

    def delete_ref(self, repo_type: str, repo_id: str, kind: str, name: str) -> None:
        with self.lock:
            repo = self.repo(repo_type, repo_id)
            if name not in repo[kind]:
                raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            del repo[kind][name]
            self._save()

    def history(self, repo: dict, commit_id: str) -> list[str]:
        ids = []
        while commit_id:
            ids.append(commit_id)
            commit_id = repo["commits"][commit_id]["parent"]
        return ids


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class HubRequestHandler(BaseHTTPRequestHandler):
    """Routes one request; the server object carries `store`, `tokens` and `user`."""

    protocol_version = "HTTP/1.1"
    server: "LocalHubServer"

    def log_message(self, format, *args):  # noqa: A002 - quiet unless asked
        if self.server.verbose:
            super().log_message(format, *args)

    # plumbing ------------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            # header values must be one latin-1 line
            self.send_header(name, " ".join(str(value).split()).encode("latin-1", "replace").decode("latin-1"))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, payload, status: int = 200, headers: dict | None = None):
        self._send(status, json.dumps(payload).encode(), headers)

    def _body(self) -> bytes:
        return self._request_body

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def _check_auth(self, write: bool) -> None:
        token = self._token()
        if token is not None and token not in self.server.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        if write and token is None:
            raise HubError(401, "You must be authenticated to write to the Hub (no token was sent)")

    def _readable_repo(self, repo_type: str, repo_id: str) -> dict:
        """The repo, if this request may see it. Like the Hub, a private repo without a valid token answers 401
        with `RepoNotFound`, so its existence is not revealed (the client raises `RepositoryNotFoundError`)."""
        with self.server.store.lock:
            repo = self.server.store.repo(repo_type, repo_id)
        if repo["private"] and self._token() not in self.server.tokens:
            raise HubError(401, f"Repository Not Found for url: {repo_type} {repo_id} (private repos need a token)",
                           "RepoNotFound")
        return repo

    def _handle(self):
        # Read the whole body first: an early error reply must not leave it in a kept-alive connection.
        length = int(self.headers.get("Content-Length") or 0)
        self._request_body = self.rfile.read(length) if length else b""
        try:
            self._route()
        except HubError as err:
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._json({"error": err.message}, err.status, headers)
        except (KeyError, ValueError, json.JSONDecodeError) as err:
            self._json({"error": f"bad request: {err!r}"}, 400)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle

    # routing -------------------------------------------------------------------------------------------------
    def _route(self):
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p != ""]  # still quoted: "%2F" stays inside one part
        query = parse_qs(url.query)
        method = self.command
        if parts[:2] == ["api", "whoami-v2"]:
            self._check_auth(write=True)
            return self._json({"type": "user", "name": self.server.user, "fullname": self.server.user, "orgs": [],
                               "auth": {"type": "access_token", "accessToken": {"role": "write"}}})
        if parts[:2] == ["api", "validate-yaml"] and method == "POST":
            payload = json.loads(self._body() or b"{}")
            content = payload.get("content", "")
            if content.startswith("---"):  # a model card: only its front matter is YAML
                content = content.split("---", 2)[1] if content.count("---") >= 2 else content
            try:
                yaml.safe_load(content)
            except yaml.YAMLError as err:
                raise HubError(400, f"invalid YAML metadata: {err}")
            return self._json({"errors": [], "warnings": []})
        if parts[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create_repo()
        if parts[:3] == ["api", "repos", "delete"] and method == "DELETE":
            self._check_auth(write=True)
            payload = json.loads(self._body() or b"{}")
            repo_id = f"{payload.get('organization') or self.server.user}/{payload['name']}"
            self.server.store.delete_repo(payload.get("type") or "model", repo_id)
            return self._json({})
        if len(parts) >= 4 and parts[0] == "api" and parts[1] in REPO_TYPES:
            repo_type, repo_id = REPO_TYPES[parts[1]], f"{unquote(parts[2])}/{unquote(parts[3])}"
            return self._repo_api(method, repo_type, repo_id, parts[4:], query)
        if "resolve" in parts:
            index = parts.index("resolve")
            prefix = parts[:index]
            repo_type = "model"
            if len(prefix) == 3 and prefix[0] in REPO_TYPES:
                repo_type, prefix = REPO_TYPES[prefix[0]], prefix[1:]
            if len(prefix) == 2 and len(parts) > index + 2:
                return self._resolve(repo_type, "/".join(unquote(p) for p in prefix), parts[index + 1],
                                     "/".join(unquote(p) for p in parts[index + 2:]))
        raise HubError(404, f"no route for {method} {url.path}")

    def _create_repo(self):
        self._check_auth(write=True)
        payload = json.loads(self._body() or b"{}")
        repo_id = f"{payload.get('organization') or self.server.user}/{payload['name']}"
        repo_type = payload.get("type") or "model"
        url = f"{self.server.url}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
        # huggingface_hub 2.x sends {"visibility": "private"}; older clients {"private": true}
        private = payload.get("private") is True or payload.get("visibility") in ("private", "protected")
        if not self.server.store.create_repo(repo_type, repo_id, private):
            return self._json({"error": "You already created this model repo", "url": url}, 409)
        return self._json({"url": url, "name": repo_id, "id": repo_id})

    def _repo_api(self, method: str, repo_type: str, repo_id: str, rest: list[str], query: dict):
        store = self.server.store
        write = method in ("POST", "PUT", "DELETE") and (rest[:1] != ["paths-info"])
        self._check_auth(write=write)
        repo = self._readable_repo(repo_type, repo_id)
        action = rest[0] if rest else "info"
        if action in ("info", "revision"):
            revision = unquote(rest[1]) if action == "revision" and len(rest) > 1 else "main"
            with store.lock:
                commit_id, files = store.files_at(repo, revision)
            return self._json({"id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0], "sha": commit_id,
                               "private": repo["private"], "disabled": False, "gated": False, "downloads": 0,
                               "likes": 0, "tags": [], "createdAt": repo["created"], "lastModified": _now(),
                               "siblings": [{"rfilename": p} for p in sorted(files)]})
        if action == "preupload" and method == "POST":
            payload = json.loads(self._body())
            with store.lock:
                try:
                    _, files = store.files_at(repo, rest[1])
                except HubError:
                    files = {}
            return self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                          "oid": files.get(f["path"], {}).get("oid")} for f in payload["files"]]})
        if action == "commit" and method == "POST":
            lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
            header = next((line["value"] for line in lines if line["key"] == "header"), {})
            operations = [line for line in lines if line["key"] != "header"]
            commit_id = store.commit(repo_type, repo_id, rest[1], header, operations)
            return self._json({"success": True, "commitOid": commit_id,
                               "commitUrl": f"{self.server.url}/{repo_id}/commit/{commit_id}", "hookOutput": ""})
        if action == "refs":
            with store.lock:
                def ref_list(kind, prefix):
                    return [{"name": n, "ref": f"refs/{prefix}/{n}", "targetCommit": c}
                            for n, c in sorted(repo[kind].items())]
                return self._json({"branches": ref_list("branches", "heads"), "tags": ref_list("tags", "tags"),
                                   "converts": [], "pullRequests": []})
        if action in ("branch", "tag"):
            kind = "branches" if action == "branch" else "tags"
            if method == "DELETE":
                store.delete_ref(repo_type, repo_id, kind, unquote(rest[1]))
                return self._json({})
            payload = json.loads(self._body() or b"{}")
            if action == "branch":
                store.create_ref(repo_type, repo_id, kind, unquote(rest[1]), payload.get("startingPoint"),
                                 empty=bool(payload.get("emptyBranch")))
            else:
                store.create_ref(repo_type, repo_id, kind, payload["tag"], unquote(rest[1]))
            return self._json({})
        if action == "tree":
            path = "/".join(unquote(p) for p in rest[2:])
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            with store.lock:
                commit_id, files = store.files_at(repo, rest[1])
            return self._json(self._tree(files, path, recursive, commit_id))
        if action == "paths-info" and method == "POST":
            body = self._body()
            ctype = self.headers.get("Content-Type", "")
            if "json" in ctype:
                paths = json.loads(body).get("paths", [])
            else:
                paths = parse_qs(body.decode()).get("paths", [])
            with store.lock:
                _, files = store.files_at(repo, rest[1])
            entries = []
            for path in paths:
                if path in files:
                    entries.append(self._file_json(path, files[path]))
                elif any(p.startswith(path.rstrip("/") + "/") for p in files):
                    entries.append({"type": "directory", "path": path, "oid": "0" * 40, "size": 0})
            return self._json(entries)
        if action == "commits":
            with store.lock:
                commit_id = store.resolve(repo, rest[1] if len(rest) > 1 else "main")
                commits = [dict(repo["commits"][c], id=c) for c in store.history(repo, commit_id)]
            return self._json([{"id": c["id"], "title": c["title"], "message": c["description"],
                                "authors": [{"user": self.server.user}], "date": c["date"]} for c in commits])
        raise HubError(404, f"no route for {method} /api/{repo_type}s/{repo_id}/{'/'.join(rest)}")

    @staticmethod
    def _file_json(path: str, entry: dict) -> dict:
        return {"type": "file", "path": path, "oid": entry["oid"], "size": entry["size"]}

    def _tree(self, files: dict, path: str, recursive: bool, commit_id: str) -> list[dict]:
        prefix = path.rstrip("/") + "/" if path else ""
        if path and path in files:
            return [self._file_json(path, files[path])]
        if path and not any(p.startswith(prefix) for p in files):
            raise HubError(404, f"{path} does not exist at {commit_id}", "EntryNotFound")
        entries, folders = [], set()
        for file_path in sorted(files):
            if not file_path.startswith(prefix):
                continue
            relative = file_path[len(prefix):].split("/")
            for depth in range(1, len(relative)):
                folder = prefix + "/".join(relative[:depth])
                if folder not in folders and (recursive or depth == 1):
                    folders.add(folder)
                    entries.append({"type": "directory", "path": folder, "oid": "0" * 40, "size": 0})
            if recursive or len(relative) == 1:
                entries.append(self._file_json(file_path, files[file_path]))
        return entries

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str):
        store = self.server.store
        self._check_auth(write=False)
        repo = self._readable_repo(repo_type, repo_id)
        with store.lock:
            commit_id, files = store.files_at(repo, revision)
        headers = {"X-Repo-Commit": commit_id}
        if path not in files:
            # the commit header lets the client cache "this file does not exist at this commit"
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", headers)
        entry = files[path]
        data = store.blob_path(entry["sha256"]).read_bytes()
        headers.update({"ETag": f'"{entry["oid"]}"', "Accept-Ranges": "bytes"})
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "") or "")
        if match and data:
            start = int(match.group(1)) if match.group(1) else max(len(data) - int(match.group(2)), 0)
            end = int(match.group(2)) if match.group(1) and match.group(2) else len(data) - 1
            end = min(end, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(HTTPStatus.PARTIAL_CONTENT, data[start:end + 1], headers, "application/octet-stream")
        return self._send(200, data, headers, "application/octet-stream")


class LocalHubServer(ThreadingHTTPServer):
    """`ThreadingHTTPServer` with the Hub's routes; `url` is what `HF_ENDPOINT` should be set to."""

    daemon_threads = True

    def __init__(self, host: str, port: int, root, tokens=(DEFAULT_TOKEN,), user: str = DEFAULT_USER,
                 verbose: bool = False):
        super().__init__((host, port), HubRequestHandler)
        self.store = HubStore(root)
        self.tokens, self.user, self.verbose = set(tokens), user, verbose

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def serve(host: str = "127.0.0.1", port: int = 0, root="hub-data", tokens=(DEFAULT_TOKEN,), user=DEFAULT_USER,
          verbose: bool = False) -> LocalHubServer:
    """A bound server (port 0 picks a free one); call `serve_forever()` (e.g. in a thread) and `shutdown()`."""
    return LocalHubServer(host, port, root, tokens, user, verbose)


def start_in_thread(root, host: str = "127.0.0.1", port: int = 0, tokens=(DEFAULT_TOKEN,)) -> LocalHubServer:
    """A server already answering requests from a daemon thread; stop it with `server.shutdown()`."""
    server = serve(host, port, root, tokens)
    threading.Thread(target=server.serve_forever, name="local-hub", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--root", required=True, help="folder holding the served repos (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; keep 127.0.0.1 unless you mean it")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument("--token", action="append", help=f"accepted token (repeatable; default {DEFAULT_TOKEN})")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if not args.token and args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error(f"--host {args.host}: the default token {DEFAULT_TOKEN!r} is public; give your own with --token "
                     "before serving beyond this machine")
    server = serve(args.host, args.port, args.root, args.token or [DEFAULT_TOKEN], verbose=args.verbose)
    print(f"READY {server.server_address[1]}", flush=True)
    print(f"export HF_ENDPOINT={server.url} HF_TOKEN={(args.token or [DEFAULT_TOKEN])[0]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
