"""Running model-written programs against HumanEval's tests, and the pass@k estimate.

Executing code a model wrote is unsafe. The package follows lm-eval's own opt-in: the HumanEval task is marked
`unsafe_code: true`, so lm-eval refuses to run it unless the caller passes `confirm_run_unsafe_code=True`
(`--confirm-run-unsafe-code` on the command line), and, like Hugging Face's `code_eval` metric that lm-eval's
stock HumanEval task uses, nothing executes unless the environment variable `HF_ALLOW_CODE_EVAL=1` is set (the
command sets it when confirmed). Each program runs in its own Python subprocess in isolated mode (`-I`), in an
empty temporary directory, under the supervisor in `code_sandbox.py`: its own session, a wall-clock timeout after
which it and every process it started are killed (also when it exits leaving processes behind, which fails it), a
process-count limit (as `nobody` when running as root, where the kernel ignores that limit), and POSIX resource
limits (CPU seconds, address space, file size, no core dumps). That contains accidents (infinite loops, memory
blow-ups, forks), not attacks: run untrusted models' code inside a container or VM.

pass@k is the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code"):
1 - C(n - c, k) / C(n, k) for n samples of which c pass.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALLOW_ENV = "HF_ALLOW_CODE_EVAL"
DEFAULT_TIMEOUT = 5.0  # seconds per program; HumanEval's own harness uses 3
MEMORY_LIMIT = 2 << 30  # bytes of address space per process
MAX_PROCESSES = 16  # processes a program may run at once (itself included); HumanEval solutions need one
SUPERVISOR_MARGIN = 30.0  # seconds the supervisor may take beyond the program's timeout to kill and reap
SANDBOX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "code_sandbox.py")


class CodeExecutionNotAllowed(RuntimeError):
    """Raised when model-written code would run without the explicit opt-in."""


@dataclass(frozen=True)
class ExecutionResult:
    """How one program ended: its exit status (None when killed at the timeout), whether the timeout hit, and how
    many of its processes were still running when it exited (all killed; any makes it fail)."""

    returncode: int | None
    timed_out: bool
    leftovers: int

    @property
    def passed(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.leftovers


def execute(program: str, timeout: float = DEFAULT_TIMEOUT) -> ExecutionResult:
    """Run `program` contained by `code_sandbox` (own session, every descendant killed at the end, process, CPU,
    memory and file limits, as `nobody` when we are root); requires `HF_ALLOW_CODE_EVAL=1`."""
    if os.environ.get(ALLOW_ENV) != "1":
        raise CodeExecutionNotAllowed(
            f"executing model-written code is disabled; set {ALLOW_ENV}=1 (the eval command does so with "
            "--confirm-run-unsafe-code) after reading the safety note in docs/evaluation.md")
    if os.name != "posix":
        raise CodeExecutionNotAllowed("executing model-written code needs a POSIX system (process groups, setrlimit)")
    with tempfile.TemporaryDirectory(prefix="hf_smallllm_exec_") as workdir:
        path = os.path.join(workdir, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(program)
        command = [sys.executable, "-I", SANDBOX, str(timeout), str(MEMORY_LIMIT), str(MAX_PROCESSES), path]
        # The supervisor gets a margin over the program's timeout to kill and reap; it has its own session so
        # that, should it hang, one killpg ends it and whatever it started.
        supervisor = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env={"PATH": os.environ.get("PATH", "")},
                                      start_new_session=True)
        try:
            out, err = supervisor.communicate(timeout=timeout + SUPERVISOR_MARGIN)
        except subprocess.TimeoutExpired:
            os.killpg(supervisor.pid, signal.SIGKILL)
            supervisor.communicate()
            raise RuntimeError(
                f"the code-execution supervisor did not finish within {timeout + SUPERVISOR_MARGIN:g}s") from None
    if supervisor.returncode != 0:
        raise RuntimeError(f"the code-execution supervisor failed (exit {supervisor.returncode}): "
                           f"{err.decode(errors='replace').strip()[-500:]}")
    return ExecutionResult(**json.loads(out.decode().strip().splitlines()[-1]))


def run_program(program: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """True when `program` exits with status 0 within `timeout` seconds leaving no process behind; requires
    `HF_ALLOW_CODE_EVAL=1`."""
    return execute(program, timeout).passed


def estimate_pass_at_k(samples: int, correct: int, k: int) -> float:
    """Unbiased pass@k from `samples` attempts of which `correct` passed."""
    if not 0 <= correct <= samples or k < 1:
        raise ValueError(f"need 0 <= correct <= samples and k >= 1, got samples={samples} correct={correct} k={k}")
    if samples - correct < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(samples - correct + 1, samples + 1)))


def pass_at_k(references: Sequence[str], predictions: Sequence[Sequence[str]], k: Sequence[int] | int = (1,),
              timeout: float = DEFAULT_TIMEOUT) -> dict[str, float]:
    """lm-eval metric: `predictions[i]` are candidate programs for problem i, `references[i]` its test code; returns
    {"pass@k": mean over problems} for each k not larger than the number of candidates."""
    ks = [k] if isinstance(k, int) else list(k)
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} prediction lists")
    scores = {f"pass@{value}": [] for value in ks}
    for test, candidates in zip(references, predictions, strict=True):
        passed = sum(run_program(candidate + "\n" + test, timeout) for candidate in candidates)
        for value in ks:
            if value <= len(candidates):
                scores[f"pass@{value}"].append(estimate_pass_at_k(len(candidates), passed, value))
    return {name: float(np.mean(values)) for name, values in scores.items() if values}


def build_predictions(resps: Sequence[Sequence[str]], docs: Sequence[dict]) -> list[list[str]]:
    """lm-eval filter: each generated completion appended to its problem's prompt, giving a whole program."""
    return [[doc["prompt"] + completion for completion in completions]
            for completions, doc in zip(resps, docs, strict=True)]


__all__ = [
    "ALLOW_ENV",
    "CodeExecutionNotAllowed",
    "ExecutionResult",
    "build_predictions",
    "estimate_pass_at_k",
    "execute",
    "pass_at_k",
    "run_program",
]
