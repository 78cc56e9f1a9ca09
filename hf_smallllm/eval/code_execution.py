"""Running model-written programs against HumanEval's tests, and the pass@k estimate.

Executing code a model wrote is unsafe. The package follows lm-eval's own opt-in: the HumanEval task is marked
`unsafe_code: true`, so lm-eval refuses to run it unless the caller passes `confirm_run_unsafe_code=True`
(`--confirm-run-unsafe-code` on the command line), and, like Hugging Face's `code_eval` metric that lm-eval's
stock HumanEval task uses, nothing executes unless the environment variable `HF_ALLOW_CODE_EVAL=1` is set (the
command sets it when confirmed). Each program runs in its own Python subprocess in isolated mode (`-I`), in an
empty temporary directory, with a wall-clock timeout and POSIX resource limits (CPU seconds, address space, file
size, no core dumps). That contains accidents (infinite loops, memory blow-ups), not attacks: run untrusted
models' code inside a container or VM.

pass@k is the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code"):
1 - C(n - c, k) / C(n, k) for n samples of which c pass.
"""

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence

import numpy as np

ALLOW_ENV = "HF_ALLOW_CODE_EVAL"
DEFAULT_TIMEOUT = 5.0  # seconds per program; HumanEval's own harness uses 3
MEMORY_LIMIT = 2 << 30  # bytes of address space per program


class CodeExecutionNotAllowed(RuntimeError):
    """Raised when model-written code would run without the explicit opt-in."""


def _limit_resources(timeout: float):
    def apply():
        import resource

        cpu = int(timeout) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_program(program: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """True when `program` exits with status 0 within `timeout` seconds; requires `HF_ALLOW_CODE_EVAL=1`."""
    if os.environ.get(ALLOW_ENV) != "1":
        raise CodeExecutionNotAllowed(
            f"executing model-written code is disabled; set {ALLOW_ENV}=1 (the eval command does so with "
            "--confirm-run-unsafe-code) after reading the safety note in docs/evaluation.md")
    preexec = _limit_resources(timeout) if os.name == "posix" else None
    environment = {"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    with tempfile.TemporaryDirectory(prefix="hf_smallllm_exec_") as workdir:
        try:
            completed = subprocess.run([sys.executable, "-I", "-c", program], cwd=workdir, env=environment,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, timeout=timeout, preexec_fn=preexec,
                                       start_new_session=True)
        except subprocess.TimeoutExpired:
            return False
    return completed.returncode == 0


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
    for test, candidates in zip(references, predictions):
        passed = sum(run_program(candidate + "\n" + test, timeout) for candidate in candidates)
        for value in ks:
            if value <= len(candidates):
                scores[f"pass@{value}"].append(estimate_pass_at_k(len(candidates), passed, value))
    return {name: float(np.mean(values)) for name, values in scores.items() if values}


def build_predictions(resps: Sequence[Sequence[str]], docs: Sequence[dict]) -> list[list[str]]:
    """lm-eval filter: each generated completion appended to its problem's prompt, giving a whole program."""
    return [[doc["prompt"] + completion for completion in completions] for completions, doc in zip(resps, docs)]


__all__ = [
    "ALLOW_ENV",
    "CodeExecutionNotAllowed",
    "build_predictions",
    "estimate_pass_at_k",
    "pass_at_k",
    "run_program",
]
