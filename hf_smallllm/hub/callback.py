"""Publishing snapshots while training runs, without making training wait.

`HubPublishCallback` is a `transformers.TrainerCallback`, so it works with `transformers.Trainer` and with the
Accelerate-native loop (which drives the same callbacks). On every `on_save` whose step is chosen it hard-links the
new checkpoint's model files into a private holding folder (so `save_total_limit` may delete the checkpoint
meanwhile) and queues it; one background thread publishes queued snapshots in order, each as its own branch
(`HubPublisher.publish_snapshot`), retrying with exponential backoff and printing one line per revision. At train
end it waits (up to `final_timeout_s`) for pending snapshots, then publishes the final model to main with the model
card and `revisions.txt`. Only the main process publishes. A snapshot that still fails after its retries is
reported and skipped: training is never stopped by the Hub; re-running `hf-smallllm publish` on the run completes it.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from transformers import TrainerCallback

from ..runfiles import METRICS_NAME, RECIPE_NAME, TRAINER_STATE_NAME, checkpoint_dir, latest_checkpoint
from .publish import (
    TRAINING_ONLY_FILES,
    HubPublisher,
    PublishError,
    PublishResult,
    RevisionCollisionError,
    checkpoint_files,
    link_or_copy,
    selected,
)

_STOP = object()


def _print_line(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"[hub] {message}", file=sys.stderr)


class HubPublishCallback(TrainerCallback):
    """Publishes chosen checkpoints as branches in the background, and the final model to main at train end.

    steps / every_steps: which saved checkpoints become snapshots (both empty: every checkpoint the run saves).
    tags: {step: tag} milestone tags on those snapshots. final: publish the final model to main at train end.
    retries / backoff_s: attempts after the first, waiting backoff_s * 2**attempt between them.
    """

    def __init__(self, repo_id: str, *, output_dir: str | os.PathLike | None = None, steps: list[int] | None = None,
                 every_steps: int | None = None, tags: dict[int, str] | None = None, final: bool = True,
                 retries: int = 3, backoff_s: float = 2.0, final_timeout_s: float = 1800.0,
                 card_options: dict | None = None, log: Callable[[str], None] | None = None, **publisher_options):
        self.publisher = HubPublisher(repo_id, **publisher_options)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.steps, self.every_steps = set(steps or []), every_steps
        self.tags = {int(k): v for k, v in (tags or {}).items()}
        self.final, self.retries, self.backoff_s = final, retries, backoff_s
        self.final_timeout_s, self.card_options = final_timeout_s, card_options
        self.log = log or _print_line
        self.results: list[PublishResult] = []
        self.failures: list[tuple[int, str]] = []
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._hold = Path(tempfile.mkdtemp(prefix="hf-smallllm-hub-hold-"))

    # choosing ------------------------------------------------------------------------------------------------
    def wants(self, step: int) -> bool:
        if not self.steps and not self.every_steps:
            return True
        return step in self.steps or bool(self.every_steps and step % self.every_steps == 0)

    def _checkpoint_dir(self, args, step: int) -> Path:
        return checkpoint_dir(self.output_dir or args.output_dir, step)

    # background work ------------------------------------------------------------------------------------------
    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="hf-smallllm-hub-publish", daemon=True)
            self._worker.start()

    def _with_retries(self, what: str, function, *args, **kwargs):
        for attempt in range(self.retries + 1):
            try:
                return function(*args, **kwargs)
            except (RevisionCollisionError, ValueError, FileNotFoundError):
                raise  # retrying cannot fix these
            except Exception as err:  # network and server errors: retry
                if attempt == self.retries:
                    raise
                wait = self.backoff_s * 2 ** attempt
                self.log(f"{what}: attempt {attempt + 1} failed ({type(err).__name__}: {err}); retrying in {wait:g}s")
                time.sleep(wait)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is _STOP:
                    return
                step, folder = job
                try:
                    result = self._with_retries(f"snapshot step {step}", self.publisher.publish_snapshot, folder,
                                                tag=self.tags.get(step))
                    self._with_retries("revisions.txt", self.publisher.update_revisions_file)
                    self.results.append(result)
                    self.log(f"{self.publisher.repo_id}@{result.describe()}")
                except Exception as err:
                    self.failures.append((step, f"{type(err).__name__}: {err}"))
                    self.log(f"snapshot step {step} NOT published to {self.publisher.repo_id}: "
                             f"{type(err).__name__}: {err}")
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
            finally:
                self._queue.task_done()

    def _hold_checkpoint(self, checkpoint: Path, step: int) -> Path:
        held = checkpoint_dir(self._hold, step)
        shutil.rmtree(held, ignore_errors=True)
        held.mkdir(parents=True)
        # the links were checked against the run here: the held copy is outside it
        for name, real in checkpoint_files(checkpoint):
            if selected(name, TRAINING_ONLY_FILES) or name == TRAINER_STATE_NAME:
                link_or_copy(real, held / name)
        return held

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until queued snapshots are published; False if `timeout_s` ran out first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    # TrainerCallback ------------------------------------------------------------------------------------------
    def on_save(self, args, state, control, **kwargs):
        step = state.global_step
        if not state.is_world_process_zero or not self.wants(step):
            return
        checkpoint = self._checkpoint_dir(args, step)
        if not (checkpoint / TRAINER_STATE_NAME).exists():
            self.log(f"snapshot step {step}: {checkpoint} has no {TRAINER_STATE_NAME}; not published")
            return
        try:
            held = self._hold_checkpoint(checkpoint, step)
        except PublishError as err:  # a link out of the run: report it, never stop training
            self.failures.append((step, str(err)))
            self.log(f"snapshot step {step} NOT published to {self.publisher.repo_id}: {err}")
            return
        self._queue.put((step, held))
        self._ensure_worker()

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if not self.wait(self.final_timeout_s):
            self.log(f"gave up waiting for {self._queue.unfinished_tasks} pending snapshot(s) after "
                     f"{self.final_timeout_s:g}s; re-run `hf-smallllm publish` to complete them")
        if self.final:
            run_dir = Path(self.output_dir or args.output_dir)
            card_options = dict(self.card_options or {})
            card_options.setdefault("metrics", run_dir / METRICS_NAME)
            if "recipe" not in card_options and (run_dir / RECIPE_NAME).exists():
                import yaml

                card_options["recipe"] = yaml.safe_load((run_dir / RECIPE_NAME).read_text(encoding="utf-8"))
            try:
                folder = self._final_folder(args, state, model, processing_class)
                result = self._with_retries("final model", self.publisher.publish_final, folder,
                                            card_options=card_options)
                self.results.append(result)
                self.log(f"{self.publisher.repo_id}@{result.describe()}")
            except Exception as err:
                self.failures.append((state.global_step, f"{type(err).__name__}: {err}"))
                self.log(f"final model NOT published to {self.publisher.repo_id}: {type(err).__name__}: {err}")
        self._queue.put(_STOP)
        shutil.rmtree(self._hold, ignore_errors=True)

    def _final_folder(self, args, state, model, processing_class) -> Path:
        """The run's last checkpoint when it is at the final step; otherwise the live model saved for publishing."""
        run_dir = Path(self.output_dir or args.output_dir)
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is not None and checkpoint == checkpoint_dir(run_dir, state.global_step):
            return checkpoint
        if model is None:
            raise PublishError(f"no checkpoint at the final step {state.global_step} in {run_dir} and no model to save")
        folder = self._hold / f"final-{state.global_step}"
        model.save_pretrained(folder)
        if processing_class is not None:
            processing_class.save_pretrained(folder)
        (folder / TRAINER_STATE_NAME).write_text(json.dumps(
            {"global_step": state.global_step, "num_input_tokens_seen": int(state.num_input_tokens_seen or 0)}))
        return folder


__all__ = ["HubPublishCallback"]
