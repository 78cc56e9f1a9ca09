"""Per-domain validation during training: loss and perplexity on several named held-out sets, each logged apart.

Skywork-13B monitors validation loss on deliberately distinct held-out domains (code, academic papers, social media,
Chinese web, English web, ...) rather than one mixed set, because the curves move differently and the English-web
loss tracks the benchmark average closely (tech report section 2.2, Fig. 1). `DomainValidator` holds the documents
of each domain (read once, tokenized once per tokenizer) and scores a model on all of them; `DomainEvalCallback` runs
it every `every_steps` optimizer steps inside any loop that drives `transformers.TrainerCallback`s (the Trainer and
the package's Accelerate loop both pass `model=` and `processing_class=`), and logs each domain as
`eval/<domain>/loss` and `eval/<domain>/ppl` to the Trainer's `state.log_history`, to the run's metrics file and to
a PNG of the curves.

The loss is the mean cross-entropy per predicted token over all documents of a domain (every token but each
document's first; documents longer than `max_tokens` are cut), in the model's own tokens: comparable along one run,
not across tokenizers (use `hf_smallllm.eval.domain_ppl` for that). In multi-process training every process runs
the same evaluation (so sharded models make the same collective calls) and only the main process writes.
"""

import logging
import math
import time
from pathlib import Path

from transformers import TrainerCallback

from ..runfiles import append_metrics
from .documents import DEFAULT_CHUNK_CHARS, read_documents, resolve_domains
from .losses import encode_documents, ids_losses, pooled_loss

logger = logging.getLogger(__name__)


def metric_name(domain: str, metric: str) -> str:
    """The metrics-file key of one domain's metric, e.g. `eval/en_kjv/loss`."""
    return f"eval/{domain}/{metric}"


class DomainValidator:
    """The validation documents of several domains and the per-domain loss of a model on them.

    domains: `name=path` strings or a {name: path} mapping (None: the bundled validation domains).
    max_documents: documents per domain, evenly spaced through its file (None: all).
    max_chars: characters per document; plain-text files are cut into documents of this size.
    max_tokens: tokens per document at most (None: the model's `max_position_embeddings`); longer ones are cut.
    """

    def __init__(self, domains=None, *, max_documents: int | None = 32, max_chars: int = DEFAULT_CHUNK_CHARS,
                 max_tokens: int | None = None, batch_size: int = 4, add_bos: bool = False,
                 text_field: str = "text"):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_tokens is not None and max_tokens < 2:
            raise ValueError(f"max_tokens must be >= 2, got {max_tokens}")
        self.documents: dict[str, list[str]] = {
            d.name: read_documents(d.path, text_field=text_field, chunk_chars=max_chars,
                                   max_documents=max_documents, max_chars=max_chars)
            for d in resolve_domains(domains)
        }
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.add_bos = add_bos
        self._encoded: dict[int, dict[str, list[list[int]]]] = {}

    @property
    def domains(self) -> list[str]:
        return list(self.documents)

    def _ids(self, tokenizer) -> dict[str, list[list[int]]]:
        # Tokenize once per tokenizer object: a run evaluates the same text many times.
        key = id(tokenizer)
        if key not in self._encoded:
            self._encoded = {key: {name: encode_documents(tokenizer, texts, add_bos=self.add_bos)
                                   for name, texts in self.documents.items()}}
        return self._encoded[key]

    def evaluate(self, model, tokenizer, progress: bool = False) -> dict[str, dict[str, float]]:
        """{domain: {"loss", "ppl", "tokens", "documents"}} for `model`."""
        if tokenizer is None:
            raise ValueError("per-domain validation needs a tokenizer: give one to the callback or run the trainer "
                             "with processing_class=")
        max_tokens = self.max_tokens or getattr(getattr(model, "config", None), "max_position_embeddings", None)
        results = {}
        for name, ids in self._ids(tokenizer).items():
            if max_tokens:
                ids = [row[:max_tokens] for row in ids]
            losses = ids_losses(model, ids, batch_size=self.batch_size, progress=progress, desc=f"eval {name}")
            loss = pooled_loss(losses)
            results[name] = {"loss": loss, "ppl": math.exp(min(loss, 700.0)),
                             "tokens": sum(d.predicted_tokens for d in losses), "documents": len(losses)}
        return results

    @staticmethod
    def as_metrics(results: dict[str, dict[str, float]]) -> dict[str, float]:
        """Flattened to the metrics-file names `eval/<domain>/loss` and `eval/<domain>/ppl`."""
        metrics = {}
        for name, values in results.items():
            metrics[metric_name(name, "loss")] = values["loss"]
            metrics[metric_name(name, "ppl")] = values["ppl"]
        return metrics


class DomainEvalCallback(TrainerCallback):
    """Runs a `DomainValidator` every `every_steps` optimizer steps (and at the start and end of training) and logs
    each domain separately.

    metrics_path: the run's metrics file (JSON lines, see `hf_smallllm.runfiles`); None: not written.
    plot_path: PNG of the per-domain curves, redrawn after every evaluation; None: no plot.
    tokenizer: used when the loop passes no `processing_class`.
    """

    def __init__(self, validator: DomainValidator, *, every_steps: int = 500, metrics_path=None, plot_path=None,
                 tokenizer=None, at_start: bool = True, at_end: bool = True, is_main_process: bool = True):
        if every_steps < 1:
            raise ValueError(f"every_steps must be >= 1, got {every_steps}")
        self.validator = validator
        self.every_steps = every_steps
        self.metrics_path = Path(metrics_path) if metrics_path is not None else None
        self.plot_path = Path(plot_path) if plot_path is not None else None
        self.tokenizer = tokenizer
        self.at_start = at_start
        self.at_end = at_end
        self.is_main_process = is_main_process
        self.history: list[dict] = []  # every record this callback produced, in order
        self._last_step: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.at_start:
            self._evaluate(state, kwargs)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step > 0 and state.global_step % self.every_steps == 0:
            self._evaluate(state, kwargs)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.at_end:
            self._evaluate(state, kwargs)
        return control

    def _evaluate(self, state, kwargs) -> None:
        if self._last_step == state.global_step:
            return
        model = kwargs.get("model")
        if model is None:
            raise ValueError("DomainEvalCallback needs the model: the training loop must pass model= to callbacks")
        tokenizer = self.tokenizer or kwargs.get("processing_class") or kwargs.get("tokenizer")
        started = time.perf_counter()
        results = self.validator.evaluate(model, tokenizer)
        metrics = self.validator.as_metrics(results)
        record = {"step": state.global_step, "tokens": int(getattr(state, "num_input_tokens_seen", 0) or 0),
                  **metrics}
        self._last_step = state.global_step
        self.history.append(record)
        state.log_history.append(dict(record))
        logger.info("step %d per-domain validation (%.1fs): %s", state.global_step, time.perf_counter() - started,
                    ", ".join(f"{name} {values['loss']:.4f}" for name, values in results.items()))
        if self.is_main_process and getattr(state, "is_world_process_zero", True):
            if self.metrics_path is not None:
                append_metrics(self.metrics_path, record)
            if self.plot_path is not None:
                from .plot import plot_domain_curves

                plot_domain_curves(self.metrics_path if self.metrics_path is not None else self.history,
                                   self.plot_path)


__all__ = ["DomainEvalCallback", "DomainValidator", "metric_name"]
