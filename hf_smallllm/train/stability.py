"""Training-stability options of a recipe's `stability` section, for every family and every parallelism.

- **Embedding-gradient shrink** (`embedding_grad_shrink: alpha`): the output of the input token embedding becomes
  `e * alpha + e.detach() * (1 - alpha)`, the same values in the forward pass but only `alpha` of the gradient
  flowing into the embedding weights. This is GLM-130B's "embedding layer gradient shrink" (Zeng et al., 2022,
  arXiv 2210.02414, section 3), which uses alpha = 0.1; GEB-1.3B's paper (arXiv 2406.09900, section 2.3) trains with
  it, its alpha is not among the facts this package was built from. It is a forward hook on the input embedding, so
  it works for every family, with a tied output head too (the head's gradient is not shrunk, only the input path's),
  and leaves nothing in the saved model.
- **Loss-spike skipping** (`skip_loss_spikes: true`): after the gradients of a step are accumulated, a step whose
  loss (averaged over every micro-batch and process) exceeds `spike_factor` x the mean loss of the last
  `spike_window` applied steps is not applied: its gradients are dropped before `optimizer.step()`, so parameters,
  Adam moments and weight decay stay as they were, and the batch is consumed (the lr schedule and the data stream
  move on, as PaLM's skipped batches did). GEB's paper skips loss spikes without publishing its rule; the rule and
  its defaults here (window 100, factor 1.5, at most 10 skips in a row) are this package's. No step is skipped
  before the window is full, and after `max_consecutive_skips` skips in a row the next step is applied and the
  window restarts from it (the loss level has moved, e.g. at a mixture or sequence-length switch, rather than
  spiked). Each skip is logged and written to the run's metrics file (`skipped_loss_spike`, `spike_threshold`); the
  window travels in checkpoints (`trainer_state.json`), so a resumed run decides exactly as an uninterrupted one.
"""

import logging
import math
from collections import deque
from pathlib import Path

from torch import nn
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from ..runfiles import append_metrics

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- embedding shrink
def shrink_embedding_gradient(model: nn.Module, alpha: float):
    """Install GLM-130B's embedding-gradient shrink on `model`'s input embedding; returns the hook handle
    (`handle.remove()` undoes it). `alpha` in (0, 1]; 1 changes nothing."""
    if not 0 < alpha <= 1:
        raise ValueError(f"embedding_grad_shrink={alpha!r} must be in (0, 1] (the share of the gradient kept)")
    embedding = model.get_input_embeddings()

    def hook(module, inputs, output):
        return output * alpha + output.detach() * (1 - alpha)

    return embedding.register_forward_hook(hook)


# ---------------------------------------------------------------------------------------------- loss spikes
class LossSpikeSkipper(TrainerCallback, ExportableState):
    """Decides per optimizer step whether the update is applied (see the module docstring).

    The engine calls `check(step_loss)` with the step's global loss (reduced over processes) before the optimizer
    step and drops the gradients itself when it says so; as a callback it restores its window on resume."""

    def __init__(self, window: int = 100, factor: float = 1.5, max_consecutive_skips: int = 10,
                 metrics_path: str | Path | None = None, is_main_process: bool = True):
        if window < 1:
            raise ValueError(f"spike_window={window!r} must be at least 1 step")
        if not factor > 1:
            raise ValueError(f"spike_factor={factor!r} must be greater than 1")
        if max_consecutive_skips < 1:
            raise ValueError(f"max_consecutive_skips={max_consecutive_skips!r} must be at least 1")
        self.window, self.factor, self.max_consecutive_skips = window, factor, max_consecutive_skips
        self.metrics_path = Path(metrics_path) if metrics_path is not None else None
        self.is_main_process = is_main_process
        self.history: deque[float] = deque(maxlen=window)
        self.consecutive = 0
        self.skipped_steps: list[int] = []

    # ------------------------------------------------------------------ decision
    def threshold(self) -> float | None:
        """The loss above which the next step is skipped; None while the window is not yet full."""
        if len(self.history) < self.window:
            return None
        return self.factor * sum(self.history) / len(self.history)

    def check(self, loss: float, step: int | None = None) -> bool:
        """True when the step with this loss must be skipped; records the decision."""
        threshold = self.threshold()
        spike = threshold is not None and (not math.isfinite(loss) or loss > threshold)
        if spike and self.consecutive < self.max_consecutive_skips:
            self.consecutive += 1
            if step is not None:
                self.skipped_steps.append(step)
            logger.warning("step %s: loss %.4f > %.4f (%.2f x the mean of the last %d steps); update skipped",
                           step, loss, threshold, self.factor, len(self.history))
            if self.metrics_path is not None and self.is_main_process and step is not None:
                append_metrics(self.metrics_path, {"step": step, "skipped_loss_spike": loss,
                                                   "spike_threshold": threshold})
            return True
        if spike:  # too many in a row: the level moved; apply this step and measure from here
            logger.warning("step %s: %d loss spikes in a row; applying the update and restarting the spike window",
                           step, self.consecutive)
            self.history.clear()
        self.consecutive = 0
        if math.isfinite(loss):
            self.history.append(loss)
        return False

    # ------------------------------------------------------------------ resume
    def on_train_begin(self, args, state, control, **kwargs):
        saved = state.stateful_callbacks.get(type(self).__name__)
        if saved:  # resuming: the window of the checkpoint
            self.load_state(saved.get("attributes", saved))

    # ------------------------------------------------------------------ checkpoint state
    def state(self) -> dict:
        return {"args": {"window": self.window, "factor": self.factor,
                         "max_consecutive_skips": self.max_consecutive_skips},
                "attributes": {"history": list(self.history), "consecutive": self.consecutive,
                               "skipped_steps": list(self.skipped_steps)}}

    def load_state(self, attributes: dict) -> None:
        self.history = deque(attributes.get("history", []), maxlen=self.window)
        self.consecutive = attributes.get("consecutive", 0)
        self.skipped_steps = list(attributes.get("skipped_steps", []))


def drop_gradients(model: nn.Module) -> None:
    """Set every gradient to None: AdamW then leaves each parameter, its moments and its step count untouched."""
    for param in model.parameters():
        param.grad = None


def build_stability(recipe, model, is_main_process: bool = True) -> LossSpikeSkipper | None:
    """Apply a recipe's `stability` section to `model` (the embedding-gradient shrink hook) and return the loss-spike
    skipper the training loop must consult (None when spikes are not skipped)."""
    section = recipe.stability
    if section.embedding_grad_shrink is not None:
        shrink_embedding_gradient(model, section.embedding_grad_shrink)
    if not section.skip_loss_spikes:
        return None
    return LossSpikeSkipper(section.spike_window, section.spike_factor, section.max_consecutive_skips,
                            metrics_path=Path(recipe.training.output_dir) / "metrics.jsonl",
                            is_main_process=is_main_process)


__all__ = ["LossSpikeSkipper", "build_stability", "drop_gradients", "shrink_embedding_gradient"]
