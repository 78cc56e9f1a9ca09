"""Publishing a training run to the Hub: snapshots as branches, the final model on `main`.

Each chosen checkpoint becomes its own branch named by a `BranchTemplate` (OLMo's `step{N}-tokens{T}B` by default),
holding exactly that checkpoint's model files, the remote-code files and an `auto_map`; it is written in one
`create_commit`, which the Hub applies atomically, so a revision is either complete or absent. `main` gets the
final model, the rendered model card and `revisions.txt` (every snapshot branch, one per line, by step).

Re-running is safe: before committing, the staged files' hashes (git blob ids, and sha256 for LFS/Xet files) are
compared with the branch's tree, and an identical branch is left alone. A branch whose head is still a commit of
`main`'s history (created, then interrupted before its commit landed) is completed. A branch with other content
(not made from this checkpoint), or a tag of the same name, is a collision: an error unless `overwrite=True`.
Training-only files (optimizer, scheduler, RNG and data-stream state) are never uploaded.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..convert.remote_code import add_remote_code
from ..errors import UsageFileNotFoundError
from .model_card import SnapshotRow, render_model_card
from .revisions import (
    BranchTemplate,
    Snapshot,
    run_snapshots,
    select_snapshots,
    snapshot_of_checkpoint,
    validate_ref_name,
)

logger = logging.getLogger(__name__)

REVISIONS_FILE = "revisions.txt"
# Files of a checkpoint folder that only resuming needs; users of a snapshot never do.
TRAINING_ONLY_FILES = ("optimizer*.pt", "optimizer*.bin", "scheduler*.pt", "scaler.pt", "rng_state*.pth",
                       "training_args.bin", "data_state.json", "loss_window.json", "README.md", "*.tmp", ".*")
# Files on main that a new final model replaces wholesale (stale shards would break loading).
MODEL_WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin")
HUB_KEEP = (".gitattributes",)


class PublishError(RuntimeError):
    """Publishing failed for a reason the user can act on (token, repo, network); the message says which."""


class RevisionCollisionError(PublishError):
    """A branch or tag already exists on the Hub with content this publish did not make."""


@dataclass(frozen=True)
class PublishResult:
    revision: str  # the branch ("main" for the final model)
    step: int
    tokens: int
    status: str  # "published" (new), "completed" (an interrupted publish finished), "replaced", "unchanged"
    commit: str | None  # the branch head after publishing
    tag: str | None = None

    def describe(self) -> str:
        tag = f", tag {self.tag}" if self.tag else ""
        return (f"{self.revision}: {self.status} (step {self.step:,}, {self.tokens:,} tokens{tag}, "
                f"commit {str(self.commit)[:10]})")


def _is_interruption(err: BaseException) -> bool:
    """A dropped connection or an unavailable server (not a refusal the user must act on differently)."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(err, HfHubHTTPError):
        return getattr(err.response, "status_code", 0) >= 500
    if isinstance(err, (ConnectionError, TimeoutError, socket.gaierror, socket.herror)):
        return True
    return any(klass.__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "h11", "urllib3", "requests")
               for klass in type(err).__mro__)


def _reports_interruptions(what: str):
    """Decorator: a transport failure inside a publishing step becomes one PublishError line naming the step and
    how to finish (a re-run completes it: each revision is one atomic commit)."""
    def wrap(method):
        @functools.wraps(method)
        def run(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except PublishError:
                raise
            except Exception as err:
                if not _is_interruption(err):
                    raise
                detail = " ".join(str(err).split())[:300]
                target = f"{what} {args[0]}" if args else what
                raise PublishError(f"publishing the {target} to {self.repo_id} at {self.api.endpoint} was "
                                   f"interrupted ({type(err).__name__}: {detail}); what reached the Hub is "
                                   "consistent: re-run the same publish command (hf-smallllm publish RUN_DIR "
                                   f"{self.repo_id}) to complete it") from None
        return run
    return wrap


def selected(name: str, excludes) -> bool:
    """True when the file name `name` matches none of the glob patterns `excludes`."""
    return not any(fnmatch.fnmatch(name, pattern) for pattern in excludes)


def checkpoint_files(source: Path, run: Path | None = None):
    """(name, real path) of each regular file directly in `source`. A symlink may point at another file of the run
    (`run`, default: the parent of a `checkpoint-N` folder, else `source` itself), never outside it: publishing must
    not upload a file of the host (a `notes.txt` linking to /etc/passwd) -> PublishError naming the link."""
    source = Path(source)
    run = Path(run or (source.parent if source.name.startswith("checkpoint-") else source)).resolve()
    for path in sorted(source.iterdir()):
        real = path.resolve()
        if path.is_symlink() and not real.is_relative_to(run):
            raise PublishError(f"{path} is a symlink to {real}, outside the run folder {run}; publishing uploads "
                               "only files inside the run (replace the link by a copy, or remove it)")
        if real.is_file():  # folders, FIFOs, devices and dangling links are not model files
            yield path.name, real


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link `source` (a regular file, links already resolved) to `target`, copying across file systems."""
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        shutil.copyfile(source, target)


def stage_model_folder(source: str | Path, target: str | Path, remote_code: bool = True) -> Path:
    """Hard-link (or copy) a checkpoint's model files into `target` and add the remote-code files. Hard links keep
    the contents even if training deletes the checkpoint meanwhile (`save_total_limit`)."""
    source, target = Path(source), Path(target)
    if not (source / "config.json").exists():
        raise UsageFileNotFoundError(f"{source} is not a model folder (no config.json)")
    target.mkdir(parents=True, exist_ok=True)
    for name, real in checkpoint_files(source):
        if selected(name, TRAINING_ONLY_FILES):
            link_or_copy(real, target / name)
    if remote_code:
        add_remote_code(target)
    return target


def file_fingerprint(path: Path) -> tuple[str, str]:
    """(git blob id, sha256) of a file in one pass: the Hub reports the first for regular files, the second for
    LFS/Xet files."""
    git, sha = hashlib.sha1(b"blob %d\0" % path.stat().st_size), hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            git.update(chunk)
            sha.update(chunk)
    return git.hexdigest(), sha.hexdigest()


def _same_file(fingerprint: tuple[str, str], remote) -> bool:
    lfs = getattr(remote, "lfs", None)
    if lfs is not None:
        return getattr(lfs, "sha256", None) == fingerprint[1]
    return remote.blob_id == fingerprint[0]


class HubPublisher:
    """Publishes checkpoints of a run to one Hub repo. `endpoint`/`token` default to huggingface_hub's settings
    (`HF_ENDPOINT`, `HF_TOKEN` or the stored login)."""

    def __init__(self, repo_id: str, *, token: str | None = None, endpoint: str | None = None,
                 branch_template: str = "olmo", private: bool = False, create: bool = True, overwrite: bool = False,
                 remote_code: bool = True):
        from huggingface_hub import HfApi

        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise ValueError(f"repo id {repo_id!r} must be 'owner/name'")
        self.repo_id, self.private, self.create, self.overwrite = repo_id, private, create, overwrite
        self.remote_code = remote_code
        self.template = BranchTemplate(branch_template)
        self.api = HfApi(endpoint=endpoint, token=token)
        self._connected = False

    # repo ----------------------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Check the token and make sure the repo exists (creating it unless `create=False`)."""
        from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, RepositoryNotFoundError

        if self._connected:
            return
        try:
            user = self.api.whoami()
        except LocalTokenNotFoundError as err:
            raise PublishError(f"no Hub token: pass --token, set HF_TOKEN or run `hf auth login` ({err})") from None
        except HfHubHTTPError as err:
            status = getattr(err.response, "status_code", None)
            if status == 401:
                raise PublishError(f"the Hub at {self.api.endpoint} rejected the token (401 Unauthorized): "
                                   f"check HF_TOKEN / --token") from None
            raise PublishError(f"cannot reach the Hub at {self.api.endpoint}: {err}") from None
        except Exception as err:  # connection refused, DNS, TLS: the transport's own exception types
            raise PublishError(f"cannot reach the Hub at {self.api.endpoint}: {type(err).__name__}: {err}") from None
        logger.info("publishing to %s as %s", self.repo_id, user.get("name"))
        try:
            if self.create:
                self.api.create_repo(self.repo_id, private=self.private, exist_ok=True)
            else:
                self.api.repo_info(self.repo_id)
        except RepositoryNotFoundError:
            raise PublishError(f"repository {self.repo_id} does not exist on {self.api.endpoint} (create it, or "
                               f"publish with create=True / without --no-create)") from None
        except HfHubHTTPError as err:
            raise PublishError(f"cannot use repository {self.repo_id} on {self.api.endpoint}: {err}") from None
        self._connected = True

    def _refs(self):
        refs = self.api.list_repo_refs(self.repo_id)
        return {b.name: b.target_commit for b in refs.branches}, {t.name: t.target_commit for t in refs.tags}

    def _main_history(self) -> list[str]:
        return [c.commit_id for c in self.api.list_repo_commits(self.repo_id, revision="main")]

    def _remote_files(self, revision: str) -> dict:
        from huggingface_hub.hf_api import RepoFile

        return {e.path: e for e in self.api.list_repo_tree(self.repo_id, revision=revision, recursive=True)
                if isinstance(e, RepoFile)}

    def _commit(self, revision: str, staged: dict[str, Path], remote: dict, parent: str, message: str,
                delete: tuple[str, ...] | None) -> str:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path))
                      for name, path in sorted(staged.items())]
        for name in sorted(remote):
            if name not in staged and name not in HUB_KEEP and (delete is None or not selected(name, delete)):
                operations.append(CommitOperationDelete(path_in_repo=name))
        info = self.api.create_commit(self.repo_id, operations, commit_message=message, revision=revision,
                                      parent_commit=parent)
        return info.oid

    def _differences(self, staged: dict[str, Path], remote: dict, ignore=HUB_KEEP) -> list[str]:
        names = (set(staged) | set(remote)) - set(ignore)
        return sorted(n for n in names if n not in staged or n not in remote
                      or not _same_file(file_fingerprint(staged[n]), remote[n]))

    # snapshots -----------------------------------------------------------------------------------------------
    def branch_of(self, snapshot: Snapshot) -> str:
        return self.template.format(snapshot)

    @_reports_interruptions("snapshot")
    def publish_snapshot(self, checkpoint: str | Path, tag: str | None = None) -> PublishResult:
        """Publish one checkpoint folder as its own branch (one commit), optionally tagging that commit."""
        self.connect()
        snapshot = snapshot_of_checkpoint(checkpoint)
        branch = self.branch_of(snapshot)
        if tag is not None:
            validate_ref_name(tag, "tag")
        with tempfile.TemporaryDirectory(prefix="hf-smallllm-publish-") as tmp:
            folder = stage_model_folder(checkpoint, Path(tmp) / "stage", self.remote_code)
            staged = {p.name: p for p in folder.iterdir() if p.is_file()}
            branches, tags = self._refs()
            if branch in tags:
                raise RevisionCollisionError(f"{self.repo_id} already has a tag named {branch!r}; a snapshot branch "
                                             f"cannot take that name (choose another --branch-template)")
            history = self._main_history()
            if branch in branches:
                head = branches[branch]
                remote = self._remote_files(branch)
                differences = self._differences(staged, remote)
                if not differences:
                    status, commit = "unchanged", head
                else:
                    if head in history:
                        status = "completed"  # made by an interrupted publish: the branch has no commit of its own
                    elif self.overwrite:
                        status = "replaced"
                    else:
                        raise RevisionCollisionError(
                            f"branch {branch!r} of {self.repo_id} already exists with different content "
                            f"({len(differences)} file(s) differ: {', '.join(differences[:5])}); it was not published "
                            f"from {checkpoint}. Pass overwrite=True (--overwrite) to replace it, or use another "
                            f"branch template")
                    commit = self._commit(branch, staged, remote, head, self._message(snapshot), None)
            else:
                # Start from main's first commit (only .gitattributes) so the branch holds the snapshot alone.
                self.api.create_branch(self.repo_id, branch=branch, revision=history[-1], exist_ok=True)
                remote = self._remote_files(branch)
                commit = self._commit(branch, staged, remote, self._refs()[0][branch], self._message(snapshot), None)
                status = "published"
        if tag is not None:
            self.ensure_tag(tag, commit)
        result = PublishResult(branch, snapshot.step, snapshot.tokens, status, commit, tag)
        logger.info("hub %s: %s", self.repo_id, result.describe())
        return result

    @staticmethod
    def _message(snapshot: Snapshot) -> str:
        return f"Snapshot at step {snapshot.step:,} ({snapshot.tokens:,} training tokens)"

    def ensure_tag(self, tag: str, commit: str) -> None:
        branches, tags = self._refs()
        if tag in branches:
            raise RevisionCollisionError(f"{self.repo_id} already has a branch named {tag!r}; choose another tag")
        if tag in tags:
            if tags[tag] != commit:
                raise RevisionCollisionError(f"tag {tag!r} of {self.repo_id} already exists and points to "
                                             f"{tags[tag][:10]}, not to {commit[:10]}; delete it or choose another tag")
            return
        self.api.create_tag(self.repo_id, tag=tag, revision=commit, tag_message=f"milestone {tag}")

    # main ----------------------------------------------------------------------------------------------------
    def published_snapshots(self) -> list[tuple[str, Snapshot]]:
        """(branch, snapshot) for every branch that follows this publisher's template, by step."""
        branches, _ = self._refs()
        found = [(name, self.template.parse(name)) for name in branches if name != "main"]
        return sorted(((n, s) for n, s in found if s is not None), key=lambda item: (item[1].step, item[0]))

    def revisions_text(self) -> str:
        return "".join(f"{name}\n" for name, _ in self.published_snapshots())

    @_reports_interruptions("revisions list")
    def update_revisions_file(self) -> bool:
        """Rewrite `revisions.txt` on main to list every snapshot branch; False when it already did."""
        from huggingface_hub import CommitOperationAdd

        self.connect()
        text = self.revisions_text()
        remote = self._remote_files("main")
        if REVISIONS_FILE in remote and _same_file(self._text_fingerprint(text), remote[REVISIONS_FILE]):
            return False
        head = self._refs()[0]["main"]
        self.api.create_commit(self.repo_id, [CommitOperationAdd(REVISIONS_FILE, text.encode())],
                               commit_message="Update revisions.txt", revision="main", parent_commit=head)
        return True

    @staticmethod
    def _text_fingerprint(text: str) -> tuple[str, str]:
        data = text.encode()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(), hashlib.sha256(data).hexdigest()

    @_reports_interruptions("final model")
    def publish_final(self, folder: str | Path, *, card: bool = True, card_options: dict | None = None,
                      tag: str | None = None) -> PublishResult:
        """Publish the final model to main in one commit: model files, remote code, model card, revisions.txt."""
        self.connect()
        folder = Path(folder)
        try:
            snapshot = snapshot_of_checkpoint(folder)
        except FileNotFoundError:
            if not (folder / "config.json").exists():
                raise
            snapshot = Snapshot(0, 0, folder)  # a plain save_pretrained folder (e.g. a fine-tune)
        snapshots = self.published_snapshots()
        with tempfile.TemporaryDirectory(prefix="hf-smallllm-publish-") as tmp:
            stage = stage_model_folder(folder, Path(tmp) / "stage", self.remote_code)
            if card:
                # exact token counts where this run's checkpoints are at hand; branch names round them
                exact = {s.step: s.tokens for s in run_snapshots(folder.parent)} if folder.name.startswith(
                    "checkpoint-") else {}
                rows = [SnapshotRow(name, s.step, exact.get(s.step, s.tokens)) for name, s in snapshots]
                card = render_model_card(folder, self.repo_id, snapshots=rows, **(card_options or {}))
                (stage / "README.md").unlink(missing_ok=True)
                card.save(stage / "README.md")
            # the stage holds hard links to the run's files (a user's own revisions.txt among them): replace the
            # link, never write through it, so publishing leaves the run folder as it was
            (stage / REVISIONS_FILE).unlink(missing_ok=True)
            (stage / REVISIONS_FILE).write_text("".join(f"{name}\n" for name, _ in snapshots))
            staged = {p.name: p for p in stage.iterdir() if p.is_file()}
            remote = self._remote_files("main")
            stale_weights = {n: r for n, r in remote.items() if not selected(n, MODEL_WEIGHT_FILES) or n in staged}
            head = self._refs()[0]["main"]
            if not self._differences(staged, stale_weights):
                status, commit = "unchanged", head
            else:
                message = f"Final model: step {snapshot.step:,} ({snapshot.tokens:,} training tokens)"
                commit = self._commit("main", staged, remote, head, message, MODEL_WEIGHT_FILES)
                status = "published"
        if tag is not None:
            validate_ref_name(tag, "tag")
            self.ensure_tag(tag, commit)
        result = PublishResult("main", snapshot.step, snapshot.tokens, status, commit, tag)
        logger.info("hub %s: %s", self.repo_id, result.describe())
        return result


def publish_run(output_dir: str | Path, repo_id: str, *, steps: list[int] | None = None, every: int | None = None,
                final: str | Path | None = None, tags: dict[int, str] | None = None, progress: bool = True,
                card_options: dict | None = None, **publisher_options) -> list[PublishResult]:
    """Publish a finished run: the chosen snapshots (all checkpoints by default; `steps`/`every` pick some) each
    to its branch, then `final` (default: the newest checkpoint) to main with the card and revisions.txt.
    `tags` maps a step to a milestone tag on its snapshot. Safe to re-run; an interrupted run is completed."""
    from tqdm.auto import tqdm

    output_dir = Path(output_dir)
    snapshots = run_snapshots(output_dir)
    if not snapshots and final is None:
        raise UsageFileNotFoundError(f"{output_dir} has no checkpoint-<step>/ folders with a trainer_state.json")
    chosen = select_snapshots(snapshots, steps, every)
    unknown_tags = sorted(set(tags or {}) - {s.step for s in chosen})
    if unknown_tags:
        raise ValueError(f"tags given for step(s) {unknown_tags} that are not published snapshots")
    publisher = HubPublisher(repo_id, **publisher_options)
    publisher.connect()
    results = []
    for snapshot in tqdm(chosen, desc=f"publishing {repo_id}", unit="snapshot", disable=not progress):
        results.append(publisher.publish_snapshot(snapshot.path, tag=(tags or {}).get(snapshot.step)))
    final_folder = Path(final) if final is not None else snapshots[-1].path
    results.append(publisher.publish_final(final_folder, card_options=card_options))
    return results


__all__ = [
    "REVISIONS_FILE",
    "TRAINING_ONLY_FILES",
    "HubPublisher",
    "PublishError",
    "PublishResult",
    "RevisionCollisionError",
    "checkpoint_files",
    "file_fingerprint",
    "link_or_copy",
    "publish_run",
    "selected",
    "stage_model_folder",
]
