"""Callbacks of every pretraining run (and the SFT trainers): the progress bar and the metrics file.

`RunLogger` shows a tqdm bar with tokens seen, tokens/s, loss and lr, and appends every log record to the run's
`metrics.jsonl` (see `hf_smallllm.runfiles`) with `step`, `tokens`, `loss`, `lr`, `grad_norm`, `tokens_per_second`.
"""

import math
import time

from transformers import TrainerCallback

from ..runfiles import append_metrics

RENAMES = {"learning_rate": "lr", "train_loss": "final_loss", "num_input_tokens_seen": "tokens"}


class RunLogger(TrainerCallback):
    def __init__(self, metrics_path, progress_bar: bool = True, is_main_process: bool = True,
                 description: str = "pretraining"):
        self.metrics_path = metrics_path
        self.description = description  # the progress bar's label
        self.show_bar = progress_bar and is_main_process
        self.is_main_process = is_main_process
        self.bar = None
        self._last_time = None
        self._last_tokens = 0
        self._postfix = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_time = time.perf_counter()
        self._last_tokens = state.num_input_tokens_seen
        if self.show_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.description, unit="step",
                            dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)
            self._postfix["tokens"] = _human(state.num_input_tokens_seen)
            self.bar.set_postfix(self._postfix, refresh=False)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not self.is_main_process:
            return
        now = time.perf_counter()
        record = {"step": state.global_step, "tokens": state.num_input_tokens_seen}
        for key, value in logs.items():
            if key in ("epoch", "total_flos"):
                continue
            record[RENAMES.get(key, key)] = value
        record["tokens"] = state.num_input_tokens_seen
        if "loss" in logs and self._last_time is not None and now > self._last_time:
            record["tokens_per_second"] = (state.num_input_tokens_seen - self._last_tokens) / (now - self._last_time)
            self._last_time, self._last_tokens = now, state.num_input_tokens_seen
        append_metrics(self.metrics_path, record)
        if "loss" in record:
            self._postfix.update(loss=f"{record['loss']:.3f}", lr=f"{record.get('lr', 0):.2e}")
            if "tokens_per_second" in record:
                self._postfix["tok/s"] = _human(record["tokens_per_second"])
        if self.bar is not None:
            self.bar.set_postfix(self._postfix)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _human(value: float) -> str:
    if not value or not math.isfinite(value):
        return "0"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


__all__ = ["RunLogger"]
