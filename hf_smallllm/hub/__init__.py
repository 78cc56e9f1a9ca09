"""Publishing to the Hugging Face Hub: final models on `main`, training snapshots as branches, model cards,
remote-code packaging, listing and loading snapshots, and a local Hub-protocol server for tests and demos.

    from hf_smallllm.hub import publish_run, list_snapshots, load_snapshot
    publish_run("runs/tiny", "me/tiny", every=50)
    model = load_snapshot("me/tiny", step=100)
"""

from ..convert.remote_code import add_remote_code
from .callback import HubPublishCallback
from .model_card import render_model_card
from .publish import HubPublisher, PublishError, PublishResult, RevisionCollisionError, publish_run
from .revisions import BRANCH_TEMPLATES, BranchTemplate, Snapshot, run_snapshots, snapshot_of_checkpoint
from .snapshots import SnapshotRevision, download_snapshot, list_snapshots, load_snapshot

__all__ = ["BRANCH_TEMPLATES", "BranchTemplate", "HubPublishCallback", "HubPublisher", "PublishError",
           "PublishResult", "RevisionCollisionError", "Snapshot", "SnapshotRevision", "add_remote_code",
           "download_snapshot", "list_snapshots", "load_snapshot", "publish_run", "render_model_card",
           "run_snapshots", "snapshot_of_checkpoint"]
