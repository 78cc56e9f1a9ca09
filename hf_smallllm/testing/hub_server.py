"""A local server that speaks the Hugging Face Hub's HTTP protocol, for tests and offline demos.

It implements the part of the protocol that `huggingface_hub` (2.x) and `transformers` (5.x) use to publish and
load models: whoami, repo create/delete/info, preupload, NDJSON commits with `parentCommit` checks, the git LFS
batch API with the basic transfer, branches, tags, refs, tree, paths-info, commits, `validate-yaml`, and `resolve`
downloads with `X-Repo-Commit`, `ETag` and `Range`. Errors carry the Hub's `X-Error-Code` (`RepoNotFound`,
`RevisionNotFound`, `EntryNotFound`) so the client raises its usual exception types. Which endpoints the client calls
was established in section 1 of the project's shared notes (`shared/reference/ECOSYSTEM.md`, beside the repository),
reading huggingface_hub 2.4 against a working server.

Uploads: by default every preupload is answered "regular" (files travel base64 inside the NDJSON commit), which
works with any client. With `lfs=True` (`--lfs`) the server answers as the Hub does: "lfs" for files of
`lfs_threshold` bytes (10 MB) or more, binary files and paths the branch's `.gitattributes` sends to LFS; the client
then asks the batch API (`<repo>.git/info/lfs/objects/batch`), PUTs each object it does not have to a one-time
ticket URL and verifies it, and the commit names the object by sha256 (`lfsFile`). A repo can only commit objects
uploaded to it. huggingface_hub uses Xet instead of LFS when `hf_xet` is installed, which needs the Hub's Xet
storage: clients of an `--lfs` server set `HF_HUB_DISABLE_XET=1`.

Robustness: every malformed request gets a 4xx JSON error (never a dead handler thread); bodies are streamed to
disk up to a cap per endpoint (`MAX_JSON_BODY`, `MAX_COMMIT_BODY`, `MAX_LFS_OBJECT`; 413 beyond); repo ids, file
paths and ref names are validated as the Hub does; a bad or unsatisfiable `Range` gets 416; downloads stream from
disk.

Storage is plain files under `root`: file contents by sha256 in `blobs/`, repos, commits, branches and tags in
`state.json` (rewritten atomically after every change). Tokens: each belongs to a user; a request carrying a token
that is not known gets 401 before its body is read, and so does a write without a token. A namespace named after a
user is that user's alone: another user's token gets 403 for creating, committing or deleting there and 401
`RepoNotFound` for its private repos (as the Hub does); other namespaces are open to every valid token; reads of
public repos need no token. Binds 127.0.0.1 unless told otherwise, and refuses another address while the only
token is the published default.

    python -m hf_smallllm.testing.hub_server --root DIR --port 0      # prints "READY <port>"
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
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
# Request size caps (413 beyond them): JSON API bodies, NDJSON commits (regular files travel base64 inside them; the
# Hub itself answers "lfs" above 10 MB) and LFS object uploads, which are streamed to disk.
MAX_JSON_BODY = 16 << 20
MAX_COMMIT_BODY = 1 << 30
MAX_LFS_OBJECT = 1 << 40
LFS_THRESHOLD = 10 << 20  # bytes from which a preupload answers "lfs" when LFS is on (the Hub's 10 MB)
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
LFS_CONTENT_TYPE = "application/vnd.git-lfs+json"
# The Hub's rules for a repo name part (huggingface_hub's `validate_repo_id` checks the same on the client side).
NAME_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_oid(data: bytes) -> str:
    """The git object id of a file, which is what the Hub reports as `oid` for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def validate_repo_id(repo_id) -> str:
    """`owner/name` as the Hub accepts it: letters, digits, `.`, `_`, `-`, no `--` or `..`, at most 96 characters
    per part, starting and ending with a letter or digit (so `../../x` and a JSON null are refused)."""
    parts = repo_id.split("/") if isinstance(repo_id, str) else []
    if (len(parts) != 2 or not all(NAME_PART.fullmatch(p) for p in parts) or "--" in repo_id or ".." in repo_id
            or repo_id.endswith(".git")):
        raise HubError(400, f"invalid repo id {repo_id!r}: expected owner/name, each part letters, digits, '.', '_' "
                            "or '-' (no '--' or '..', at most 96 characters, starting and ending alphanumerically)")
    return repo_id


def validate_path(path) -> str:
    """A file path inside a repo as the Hub accepts it: relative, `/`-separated, no empty, `.` or `..` part, not
    inside `.git/`, no control characters, at most 1,000 characters (`../../etc/evil` made snapshots undownloadable)."""
    parts = path.split("/") if isinstance(path, str) else []
    if (not parts or len(path) > 1000 or any(p in ("", ".", "..") for p in parts) or parts[0] == ".git"
            or any(ord(c) < 32 or c == "\\" for c in path)):
        raise HubError(400, f"invalid path in repo {path!r}: must be relative, '/'-separated, without empty, '.' or "
                            "'..' parts, backslashes or control characters, and not under .git/")
    return path


def lfs_pointer(oid: str, size: int) -> bytes:
    return LFS_POINTER.format(oid=oid, size=size).encode()


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
        for stale in (self.root / "tmp").glob("*"):  # bodies of requests a previous server did not finish
            stale.unlink()

    # storage -------------------------------------------------------------------------------------------------
    # The two atomic writes below stay here rather than using hf_smallllm.runfiles: the server also runs as a plain
    # file (`python hub_server.py`, standard library + PyYAML only) so that it starts without the package's imports.
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
        if not isinstance(sha, str) or not SHA256.fullmatch(sha):
            raise HubError(400, f"{sha!r} is not a sha256")
        return self.root / "blobs" / sha

    def temp_path(self) -> Path:
        """A fresh file name on the store's disk, for streamed bodies (renamed into blobs/ when complete)."""
        (self.root / "tmp").mkdir(exist_ok=True)
        return self.root / "tmp" / uuid.uuid4().hex

    def add_lfs_object(self, repo_type: str, repo_id: str, oid: str, size: int, staged: Path) -> None:
        """Register an uploaded LFS object of a repo: `staged` (already hashed to `oid`) becomes blobs/<oid>."""
        target = self.blob_path(oid)
        with self.lock:
            if target.exists():
                staged.unlink()
            else:
                os.replace(staged, target)
            repo = self.repo(repo_type, repo_id)
            objects = repo.setdefault("lfs_objects", {})
            if objects.get(oid) != size:
                objects[oid] = size
                self._save()

    def has_lfs_object(self, repo: dict, oid: str, size: int | None = None) -> bool:
        """Whether `oid` was uploaded to this repo (or is in one of its commits) and its blob is on disk: a commit
        can only name objects its repo owns, never another repo's (a private one's) or a host file."""
        known = repo.get("lfs_objects", {}).get(oid)
        if known is None:
            known = next((f["size"] for c in repo["commits"].values() for f in c["files"].values()
                          if f["sha256"] == oid), None)
        return known is not None and (size is None or known == size) and self.blob_path(oid).is_file()

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

    @staticmethod
    def _lfs_entry(oid: str, size: int) -> dict:
        # a git LFS file's git object is its pointer; the content is found by sha256
        return {"sha256": oid, "oid": git_blob_oid(lfs_pointer(oid, size)), "size": size, "lfs": True}

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
                key, value = op.get("key"), op.get("value")
                if not isinstance(value, dict):
                    raise HubError(400, f"commit operation {key!r}: value must be a JSON object, got {value!r}")
                path = validate_path(value.get("path"))
                if key == "file":
                    if value.get("encoding", "base64") != "base64" or not isinstance(value.get("content"), str):
                        raise HubError(400, f"file {path!r}: content must be a base64 string "
                                            f"(encoding {value.get('encoding')!r})")
                    files[path] = self._file_entry(base64.b64decode(value["content"], validate=True))
                elif key == "lfsFile":
                    sha = value.get("oid")
                    # The oid names a file under blobs/: anything but a sha256 this repo uploaded would let a commit
                    # point at a file of the host ("/etc/passwd", "../state.json") or of another (private) repo.
                    if not isinstance(sha, str) or not SHA256.fullmatch(sha):
                        raise HubError(400, f"lfsFile {path!r}: oid {sha!r} is not a sha256 (64 lowercase hex "
                                            "characters)")
                    if value.get("algo", "sha256") != "sha256":
                        raise HubError(400, f"lfsFile {path!r}: algo {value.get('algo')!r} is not sha256")
                    if not self.has_lfs_object(repo, sha):
                        raise HubError(400, f"LFS object {sha} of {path} was never uploaded to this repo")
                    files[path] = self._lfs_entry(sha, self.blob_path(sha).stat().st_size)
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, f"File {path} does not exist", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
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
    server: LocalHubServer

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
        """The (JSON-sized) request body, already streamed to `self._body_file`."""
        self._body_file.seek(0)
        return self._body_file.read()

    def _json_body(self, kind: type = dict, empty=None):
        """The body parsed as JSON of type `kind` (a mistake is a 400 naming what was expected)."""
        body = self._body()
        if not body.strip() and empty is not None:
            return empty
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise HubError(400, f"request body is not JSON: {err}") from None
        if not isinstance(payload, kind):
            raise HubError(400, f"request body must be a JSON {kind.__name__}, got {type(payload).__name__}")
        return payload

    def _body_limit(self) -> int:
        path = urlsplit(self.path).path
        if self.command == "PUT" and path.startswith("/api/lfs-upload/"):
            return self.server.max_lfs_object
        if self.command == "POST" and "/commit/" in path:
            return self.server.max_commit_body
        return self.server.max_json_body

    def _read_body(self) -> None:
        """Stream the body (Content-Length bytes, up to the route's cap) into a spooled temporary file: large
        uploads go to disk, never into one pre-allocated buffer."""
        import tempfile

        # closed by _handle's finally
        self._body_file = tempfile.SpooledTemporaryFile(max_size=1 << 20, dir=self.server.store.temp_path().parent)  # noqa: SIM115
        raw = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self.close_connection = True
            raise HubError(411, "chunked request bodies are not supported: send Content-Length")
        if raw is None:
            return
        if not raw.strip().isdigit():
            self.close_connection = True
            raise HubError(400, f"Content-Length {raw!r} is not a non-negative integer")
        length, limit = int(raw), self._body_limit()
        if length > limit:
            self.close_connection = True  # the unread body must not be taken for the next request
            raise HubError(413, f"request body of {length:,} bytes exceeds this endpoint's limit of {limit:,} bytes")
        while length:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                self.close_connection = True
                raise HubError(400, f"request body ended {length:,} bytes before its Content-Length")
            self._body_file.write(chunk)
            length -= len(chunk)

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def _user(self) -> str | None:
        """The user whose token this request carries (None without one; an unknown token is refused earlier)."""
        return self.server.users.get(self._token())

    def _check_auth(self, write: bool, owner: str | None = None) -> None:
        """A sent token must be known; a write needs one, and writes into a namespace only its owner's token."""
        token = self._token()
        if token is not None and token not in self.server.users:
            raise HubError(401, "Invalid credentials in Authorization header")
        if write and token is None:
            raise HubError(401, "You must be authenticated to write to the Hub (no token was sent)")
        if write and owner is not None and not self._may_use_namespace(owner):
            raise HubError(403, f"You don't have the rights to write to the namespace {owner!r} (this token is "
                                f"{self.server.users[token]!r}'s)")

    def _may_use_namespace(self, owner: str) -> bool:
        """A namespace named after a user of this server is that user's alone; other namespaces (organisations the
        server does not model, e.g. `tests/`) are open to every valid token."""
        user = self._user()
        return user is not None and (owner == user or owner not in self.server.owners)

    def _check_headers(self) -> None:
        """Refuse what the headers alone show is not allowed, before a byte of the body is read: an unknown token,
        or a write without any token (except an LFS upload, which carries a one-time ticket in its path instead,
        checked here too)."""
        token = self._token()
        if token is not None and token not in self.server.users:
            raise HubError(401, "Invalid credentials in Authorization header")
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        if len(parts) == 4 and parts[:2] == ["api", "lfs-upload"] and self.command == "PUT":
            self.server.ticket(parts[2])
            return
        reads = ("paths-info", "validate-yaml")
        if self.command in ("POST", "PUT", "DELETE") and token is None and not any(p in reads for p in parts):
            raise HubError(401, "You must be authenticated to write to the Hub (no token was sent)")

    def _readable_repo(self, repo_type: str, repo_id: str) -> dict:
        """The repo, if this request may see it. Like the Hub, a private repo without a valid token answers 401
        with `RepoNotFound`, so its existence is not revealed (the client raises `RepositoryNotFoundError`)."""
        with self.server.store.lock:
            repo = self.server.store.repo(repo_type, repo_id)
        if repo["private"] and not self._may_use_namespace(repo_id.split("/")[0]):
            raise HubError(401, f"Repository Not Found for url: {repo_type} {repo_id} (private repos need their "
                                "owner's token)", "RepoNotFound")
        return repo

    def _handle(self):
        # Read the whole body first: an early error reply must not leave it in a kept-alive connection. Every
        # failure becomes a JSON error reply; a handler thread never dies with a traceback and no answer.
        self._body_file = None
        try:
            try:
                self._check_headers()
            except HubError:
                self.close_connection = True  # the unread body must not be taken for the next request
                raise
            self._read_body()
            self._route()
        except HubError as err:
            self._error(err.status, err.message, err.code, err.headers)
        except RecursionError:
            self._error(400, "bad request: JSON nested too deeply")
        except (KeyError, ValueError, TypeError, IndexError, AttributeError, UnicodeError) as err:
            self._error(400, f"bad request: {type(err).__name__}: {err}")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:  # noqa: BLE001 - a server answers every request, whatever went wrong
            if self.server.verbose:
                import traceback

                traceback.print_exc()
            self._error(500, f"internal error: {type(err).__name__}: {err}")
        finally:
            if self._body_file is not None:
                self._body_file.close()

    def _error(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        headers = {"X-Error-Message": message, **(headers or {})}
        if code:
            headers["X-Error-Code"] = code
        try:
            self._json({"error": message}, status, headers)
        except OSError:
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle

    # routing -------------------------------------------------------------------------------------------------
    def _route(self):
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p != ""]  # still quoted: "%2F" stays inside one part
        query = parse_qs(url.query)
        method = self.command
        if parts[:2] == ["api", "whoami-v2"]:
            self._check_auth(write=True)
            user = self._user()
            return self._json({"type": "user", "name": user, "fullname": user, "orgs": [],
                               "auth": {"type": "access_token", "accessToken": {"role": "write"}}})
        if parts[:2] == ["api", "validate-yaml"] and method == "POST":
            content = self._json_body().get("content", "")
            if not isinstance(content, str):
                raise HubError(400, "validate-yaml: content must be a string")
            if content.startswith("---"):  # a model card: only its front matter is YAML
                content = content.split("---", 2)[1] if content.count("---") >= 2 else content
            try:
                yaml.safe_load(content)
            except yaml.YAMLError as err:
                raise HubError(400, f"invalid YAML metadata: {err}") from err
            return self._json({"errors": [], "warnings": []})
        if parts[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create_repo()
        if parts[:3] == ["api", "repos", "delete"] and method == "DELETE":
            self._check_auth(write=True)
            repo_type, repo_id = self._repo_of_payload(self._json_body())
            self._check_auth(write=True, owner=repo_id.split("/")[0])
            self.server.store.delete_repo(repo_type, repo_id)
            return self._json({})
        if len(parts) == 4 and parts[:2] == ["api", "lfs-upload"] and method == "PUT":
            return self._lfs_upload(parts[2], parts[3])
        if len(parts) == 3 and parts[:2] == ["api", "lfs-verify"] and method == "POST":
            return self._lfs_verify(parts[2])
        lfs = self._lfs_batch_route(parts)
        if lfs is not None and method == "POST":
            return self._lfs_batch(*lfs)
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

    def _repo_of_payload(self, payload: dict) -> tuple[str, str]:
        """(repo type, repo id) named by a create/delete body; both validated as the Hub does."""
        owner, name = payload.get("organization") or self._user() or self.server.user, payload.get("name")
        if not isinstance(owner, str) or not isinstance(name, str):
            raise HubError(400, f"repo name and organization must be strings, got name={name!r} organization={owner!r}")
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES.values():
            raise HubError(400, f"repo type {repo_type!r} is not one of {sorted(REPO_TYPES.values())}")
        return repo_type, validate_repo_id(f"{owner}/{name}")

    def _create_repo(self):
        self._check_auth(write=True)
        payload = self._json_body()
        repo_type, repo_id = self._repo_of_payload(payload)
        self._check_auth(write=True, owner=repo_id.split("/")[0])
        url = f"{self.server.url}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
        # huggingface_hub 2.x sends {"visibility": "private"}; older clients {"private": true}
        private = payload.get("private") is True or payload.get("visibility") in ("private", "protected")
        if not self.server.store.create_repo(repo_type, repo_id, private):
            return self._json({"error": "You already created this model repo", "url": url}, 409)
        return self._json({"url": url, "name": repo_id, "id": repo_id})

    def _repo_api(self, method: str, repo_type: str, repo_id: str, rest: list[str], query: dict):
        store = self.server.store
        write = method in ("POST", "PUT", "DELETE") and (rest[:1] != ["paths-info"])
        self._check_auth(write=write, owner=repo_id.split("/")[0] if write else None)
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
            return self._preupload(repo, revision_of(rest, action))
        if action == "commit" and method == "POST":
            header, operations = self._commit_lines()
            commit_id = store.commit(repo_type, repo_id, revision_of(rest, action), header, operations)
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
            name = unquote(revision_of(rest, action))
            if method == "DELETE":
                store.delete_ref(repo_type, repo_id, kind, name)
                return self._json({})
            payload = self._json_body(empty={})
            if action == "branch":
                start = payload.get("startingPoint")
                if start is not None and not isinstance(start, str):
                    raise HubError(400, f"startingPoint must be a string, got {start!r}")
                store.create_ref(repo_type, repo_id, kind, validate_ref(name), start,
                                 empty=payload.get("emptyBranch") is True)
            else:
                store.create_ref(repo_type, repo_id, kind, validate_ref(payload.get("tag")), name)
            return self._json({})
        if action == "tree":
            path = "/".join(unquote(p) for p in rest[2:])
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            with store.lock:
                commit_id, files = store.files_at(repo, revision_of(rest, action))
            return self._json(self._tree(files, path, recursive, commit_id))
        if action == "paths-info" and method == "POST":
            if "json" in self.headers.get("Content-Type", ""):
                paths = self._json_body().get("paths", [])
            else:
                paths = parse_qs(self._body().decode()).get("paths", [])
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise HubError(400, f"paths must be a list of strings, got {paths!r}")
            with store.lock:
                _, files = store.files_at(repo, revision_of(rest, action))
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

    def _preupload(self, repo: dict, revision: str):
        """Which files go as "regular" (base64 in the commit) and which as "lfs" (LFS basic transfer first). With
        LFS on, like the Hub: files of `lfs_threshold` bytes or more, binary samples (a NUL byte) and paths the
        branch's .gitattributes sends to LFS; empty files are always regular. `oid` is the branch's current file:
        sha256 for LFS files, git blob id for regular ones, which is what the client compares to skip unchanged
        files."""
        payload = self._json_body()
        entries = payload.get("files")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise HubError(400, "preupload: 'files' must be a list of objects with path, sample and size")
        store = self.server.store
        with store.lock:
            try:
                _, files = store.files_at(repo, revision)
            except HubError:
                files = {}
        patterns = self._lfs_patterns(files)
        answers = []
        for entry in entries:
            path, size = validate_path(entry.get("path")), entry.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise HubError(400, f"preupload {path!r}: size must be a non-negative integer, got {size!r}")
            sample = base64.b64decode(entry.get("sample") or "", validate=True)
            lfs = self.server.lfs and size > 0 and (size >= self.server.lfs_threshold or b"\0" in sample
                                                    or any(fnmatch.fnmatch(path, p) for p in patterns))
            remote = files.get(path)
            oid = None if remote is None else remote["sha256"] if remote.get("lfs") else remote["oid"]
            answers.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": oid})
        return self._json({"files": answers})

    def _lfs_patterns(self, files: dict) -> list[str]:
        entry = files.get(".gitattributes")
        if entry is None:
            return []
        text = self.server.store.blob_path(entry["sha256"]).read_text(errors="replace")
        return [line.split()[0] for line in text.splitlines() if "filter=lfs" in line.split()[1:]]

    def _commit_lines(self) -> tuple[dict, list[dict]]:
        """The NDJSON commit body, read line by line from its spooled file: a header and operations."""
        header, operations = {}, []
        self._body_file.seek(0)
        for number, line in enumerate(self._body_file, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise HubError(400, f"commit line {number} is not JSON: {err}") from None
            if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
                raise HubError(400, f"commit line {number} must be an object with 'key' and an object 'value'")
            if item.get("key") == "header":
                header = item["value"]
            else:
                operations.append(item)
        for field in ("summary", "description", "parentCommit"):
            if header.get(field) is not None and not isinstance(header[field], str):
                raise HubError(400, f"commit header {field} must be a string, got {header[field]!r}")
        return header, operations

    # LFS basic transfer (https://github.com/git-lfs/git-lfs/blob/main/docs/api/batch.md) ----------------------
    @staticmethod
    def _lfs_batch_route(parts: list[str]) -> tuple[str, str] | None:
        """(repo type, repo id) of `/[datasets/|spaces/]owner/name.git/info/lfs/objects/batch`, else None."""
        if parts[-4:] != ["info", "lfs", "objects", "batch"]:
            return None
        prefix = [unquote(p) for p in parts[:-4]]
        repo_type = "model"
        if len(prefix) == 3 and prefix[0] in REPO_TYPES:
            repo_type, prefix = REPO_TYPES[prefix[0]], prefix[1:]
        if len(prefix) != 2 or not prefix[1].endswith(".git"):
            return None
        return repo_type, f"{prefix[0]}/{prefix[1][:-4]}"

    def _lfs_batch(self, repo_type: str, repo_id: str):
        """Upload batch: objects this repo already has get no actions (the client skips them); the others get an
        upload href carrying a one-time ticket (the client PUTs there without its token, as to S3) and a verify
        href."""
        self._check_auth(write=True, owner=repo_id.split("/")[0])
        repo = self._readable_repo(repo_type, repo_id)
        payload = self._json_body()
        if payload.get("operation") != "upload":
            raise HubError(400, f"LFS batch operation {payload.get('operation')!r}: only 'upload' is served "
                                "(downloads go through /resolve/)")
        if "basic" not in (payload.get("transfers") or ["basic"]):
            raise HubError(400, f"LFS transfers {payload.get('transfers')!r}: this server speaks 'basic' only")
        objects = payload.get("objects")
        if not isinstance(objects, list):
            raise HubError(400, "LFS batch: 'objects' must be a list")
        answers = []
        for item in objects:
            oid, size = (item.get("oid"), item.get("size")) if isinstance(item, dict) else (None, None)
            if not isinstance(oid, str) or not SHA256.fullmatch(oid) or not isinstance(size, int) or size < 0:
                answers.append({"oid": str(oid), "size": size if isinstance(size, int) else 0,
                                "error": {"code": 422, "message": "oid must be a sha256 and size an integer >= 0"}})
                continue
            answer = {"oid": oid, "size": size, "authenticated": True}
            with self.server.store.lock:
                known = self.server.store.has_lfs_object(repo, oid, size)
            if not known:
                ticket = self.server.new_ticket(repo_type, repo_id, oid, size)
                answer["actions"] = {
                    "upload": {"href": f"{self.server.url}/api/lfs-upload/{ticket}/{oid}", "header": {}},
                    "verify": {"href": f"{self.server.url}/api/lfs-verify/{ticket}", "header": {}}}
            answers.append(answer)
        body = json.dumps({"transfer": "basic", "objects": answers, "hash_algo": "sha256"}).encode()
        return self._send(200, body, content_type=LFS_CONTENT_TYPE)

    def _lfs_upload(self, ticket: str, oid: str):
        """PUT of one object: the streamed body must hash to the ticket's oid and have its size."""
        repo_type, repo_id, expected, size = self.server.ticket(ticket)
        if oid != expected:
            raise HubError(400, f"upload ticket is for {expected}, not {oid}")
        staged = self.server.store.temp_path()
        digest, length = hashlib.sha256(), 0
        self._body_file.seek(0)
        with open(staged, "wb") as out:
            for chunk in iter(lambda: self._body_file.read(1 << 20), b""):
                digest.update(chunk)
                length += len(chunk)
                out.write(chunk)
        if digest.hexdigest() != oid or length != size:
            staged.unlink()
            raise HubError(400, f"uploaded object has sha256 {digest.hexdigest()} and {length} bytes; the batch "
                                f"announced {oid} and {size} bytes")
        self.server.store.add_lfs_object(repo_type, repo_id, oid, size, staged)
        return self._send(200)

    def _lfs_verify(self, ticket: str):
        self._check_auth(write=True)
        repo_type, repo_id, oid, size = self.server.ticket(ticket)
        payload = self._json_body()
        if payload.get("oid") != oid or payload.get("size") != size:
            raise HubError(400, f"verify: expected oid {oid} and size {size}, got {payload!r}")
        with self.server.store.lock:
            if not self.server.store.has_lfs_object(self.server.store.repo(repo_type, repo_id), oid, size):
                raise HubError(404, f"LFS object {oid} was not uploaded")
        self.server.drop_ticket(ticket)
        return self._json({"message": "verified"})

    def _file_json(self, path: str, entry: dict) -> dict:
        info = {"type": "file", "path": path, "oid": entry["oid"], "size": entry["size"]}
        if entry.get("lfs"):
            info["lfs"] = {"oid": entry["sha256"], "size": entry["size"],
                           "pointerSize": len(lfs_pointer(entry["sha256"], entry["size"]))}
        return info

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
        blob = store.blob_path(entry["sha256"])
        size = entry["size"]
        if entry.get("lfs"):  # as the Hub: LFS files are identified by their sha256
            headers.update({"ETag": f'"{entry["sha256"]}"', "X-Linked-Etag": f'"{entry["sha256"]}"',
                            "X-Linked-Size": str(size)})
        else:
            headers["ETag"] = f'"{entry["oid"]}"'
        headers["Accept-Ranges"] = "bytes"
        start, end, status = 0, size - 1, 200
        requested = self.headers.get("Range")
        if requested is not None:
            span = parse_range(requested, size)
            if span is None:
                raise HubError(416, f"Range {requested!r} is not satisfiable for {path} ({size} bytes)", None,
                               {**headers, "Content-Range": f"bytes */{size}"})
            start, end, status = *span, HTTPStatus.PARTIAL_CONTENT
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return self._send_file(status, blob, start, end - start + 1, headers)

    def _send_file(self, status: int, blob: Path, start: int, length: int, headers: dict):
        """Stream `length` bytes of `blob` from `start` (1 MiB at a time: files of any size, little memory)."""
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        for name, value in headers.items():
            self.send_header(name, str(value))
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(blob, "rb") as f:
            f.seek(start)
            while length > 0:
                chunk = f.read(min(length, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                length -= len(chunk)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `bytes=` range within a file of `size` bytes, or None when it is malformed,
    has several ranges, or lies outside the file (the reply is then 416)."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or match.group(1) == match.group(2) == "":
        return None
    if match.group(1):
        start = int(match.group(1))
        end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
    else:  # a suffix: the last N bytes
        suffix = int(match.group(2))
        if suffix == 0:
            return None
        start, end = max(size - suffix, 0), size - 1
    if start >= size or start > end:
        return None
    return start, end


def revision_of(rest: list[str], action: str) -> str:
    """The revision part of `/api/<type>s/<repo>/<action>/<revision>/...` (still URL-quoted)."""
    if len(rest) < 2 or not rest[1]:
        raise HubError(400, f"/{action}/ needs a revision in the URL, e.g. /{action}/main")
    return rest[1]


def validate_ref(name) -> str:
    """A branch or tag name git accepts (the subset the Hub allows)."""
    if (not isinstance(name, str) or not name or len(name) > 256 or name.startswith(("/", "-", "."))
            or name.endswith(("/", ".", ".lock")) or ".." in name or "//" in name or "@{" in name
            or any(ord(c) < 33 or c in "~^:?*[\\" for c in name)):
        raise HubError(400, f"invalid branch or tag name {name!r}")
    return name


class LocalHubServer(ThreadingHTTPServer):
    """`ThreadingHTTPServer` with the Hub's routes; `url` is what `HF_ENDPOINT` should be set to."""

    daemon_threads = True

    def __init__(self, host: str, port: int, root, tokens=(DEFAULT_TOKEN,), user: str = DEFAULT_USER,
                 verbose: bool = False, lfs: bool = False, lfs_threshold: int = LFS_THRESHOLD):
        super().__init__((host, port), HubRequestHandler)
        self.store = HubStore(root)
        # token -> the user it belongs to: a mapping, or tokens that all belong to `user`
        self.users = dict(tokens) if isinstance(tokens, dict) else {token: user for token in tokens}
        self.tokens, self.user, self.verbose = set(self.users), user, verbose
        self.owners = set(self.users.values())
        self.lfs, self.lfs_threshold = lfs, lfs_threshold
        self.max_json_body, self.max_commit_body, self.max_lfs_object = MAX_JSON_BODY, MAX_COMMIT_BODY, MAX_LFS_OBJECT
        self._tickets: dict[str, tuple[str, str, str, int, float]] = {}
        self._tickets_lock = threading.Lock()

    # one-time LFS upload tickets: the client PUTs objects without its token (as to S3's presigned URLs)
    TICKET_LIFETIME_S = 3600.0

    def new_ticket(self, repo_type: str, repo_id: str, oid: str, size: int) -> str:
        ticket = uuid.uuid4().hex + uuid.uuid4().hex
        with self._tickets_lock:
            now = time.monotonic()
            self._tickets = {k: v for k, v in self._tickets.items() if v[4] > now}
            self._tickets[ticket] = (repo_type, repo_id, oid, size, now + self.TICKET_LIFETIME_S)
        return ticket

    def ticket(self, ticket: str) -> tuple[str, str, str, int]:
        with self._tickets_lock:
            found = self._tickets.get(ticket)
        if found is None or found[4] < time.monotonic():
            raise HubError(403, "unknown or expired LFS upload ticket (ask the batch API again)")
        return found[:4]

    def drop_ticket(self, ticket: str) -> None:
        with self._tickets_lock:
            self._tickets.pop(ticket, None)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def serve(host: str = "127.0.0.1", port: int = 0, root="hub-data", tokens=(DEFAULT_TOKEN,), user=DEFAULT_USER,
          verbose: bool = False, lfs: bool = False, lfs_threshold: int = LFS_THRESHOLD) -> LocalHubServer:
    """A bound server (port 0 picks a free one); call `serve_forever()` (e.g. in a thread) and `shutdown()`."""
    return LocalHubServer(host, port, root, tokens, user, verbose, lfs, lfs_threshold)


def start_in_thread(root, host: str = "127.0.0.1", port: int = 0, tokens=(DEFAULT_TOKEN,), lfs: bool = False,
                    lfs_threshold: int = LFS_THRESHOLD) -> LocalHubServer:
    """A server already answering requests from a daemon thread; stop it with `server.shutdown()`."""
    server = serve(host, port, root, tokens, lfs=lfs, lfs_threshold=lfs_threshold)
    threading.Thread(target=server.serve_forever, name="local-hub", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--root", required=True, help="folder holding the served repos (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; keep 127.0.0.1 unless you mean it")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument("--token", action="append", metavar="[USER=]TOKEN",
                        help=f"accepted token, of USER (default {DEFAULT_USER}); a token writes only to its user's "
                             f"namespace (repeatable; default {DEFAULT_TOKEN})")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.add_argument("--lfs", action="store_true",
                        help="answer 'lfs' for large and binary files as the Hub does and take them through the LFS "
                             "basic transfer; clients must set HF_HUB_DISABLE_XET=1 (hf_xet speaks only to the Hub)")
    parser.add_argument("--lfs-threshold", type=int, default=LFS_THRESHOLD, help="bytes from which files go to LFS")
    args = parser.parse_args(argv)
    if not args.token and args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error(f"--host {args.host}: the default token {DEFAULT_TOKEN!r} is public; give your own with --token "
                     "before serving beyond this machine")
    users = dict(reversed(t.split("=", 1)) if "=" in t else (t, DEFAULT_USER) for t in args.token or [DEFAULT_TOKEN])
    server = serve(args.host, args.port, args.root, users, verbose=args.verbose, lfs=args.lfs,
                   lfs_threshold=args.lfs_threshold)
    print(f"READY {server.server_address[1]}", flush=True)
    print(f"export HF_ENDPOINT={server.url} HF_TOKEN={next(iter(users))}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
