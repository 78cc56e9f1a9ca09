"""Running model-written programs against HumanEval's tests, and the pass@k estimate.

Executing code a model wrote is unsafe. The package follows lm-eval's own opt-in: the HumanEval task is marked
`unsafe_code: true`, so lm-eval refuses to run it unless the caller passes `confirm_run_unsafe_code=True`
(`--confirm-run-unsafe-code` on the command line), and, like Hugging Face's `code_eval` metric that lm-eval's
stock HumanEval task uses, nothing executes unless the environment variable `HF_ALLOW_CODE_EVAL=1` is set (the
command sets it when confirmed). Each program runs in a sandbox made by bubblewrap (`bwrap`, Debian/Ubuntu package
`bubblewrap`): new mount, PID, network, IPC and UTS namespaces, so the program sees only the Python runtime, the
system libraries and its own folder, all read-only, has no network, and can neither see nor signal a process
outside; as root it runs as `nobody` with no capability at all, so the kernel's process limit applies. Inside, the
supervisor in `code_sandbox.py` gives it a wall-clock timeout after which it and every process it started are
killed (also when it exits leaving processes behind, which fails it), a process-count limit and POSIX resource
limits (CPU seconds, address space, file size, no core dumps); its output goes to /dev/null. Without bubblewrap
nothing runs: the error says what to install.

Why bubblewrap: it is the unprivileged sandbox Flatpak uses, a small audited setuid-free binary packaged by every
distribution, and it builds exactly the namespaces and read-only bind mounts needed here from one command line.
nsjail does more (seccomp policies, cgroups) but is not packaged for Debian 12; Landlock alone does not isolate the
network or processes; hand-written rules (the previous supervisor) left the whole file system readable.

pass@k is the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code"):
1 - C(n - c, k) / C(n, k) for n samples of which c pass.
"""

import functools
import json
import os
import shutil
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


SANDBOX_USER = 65534  # nobody: who the program runs as when we are root
INSIDE_FOLDER = "/sandbox"  # the program's folder, as the program sees it
INSIDE_SUPERVISOR = "/supervisor.py"


def _python() -> str:
    """The base interpreter (a virtual environment adds nothing the program may import)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _system_binds() -> list[str]:
    """Read-only views of the system folders the interpreter needs (merged-/usr symlinks kept as links)."""
    arguments = []
    for name in ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin"):
        if os.path.islink(name):
            arguments += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            arguments += ["--ro-bind", name, name]
    return arguments


def _open_parents(path: str) -> list[str]:
    """bwrap makes a bind target's missing parents with the host folders' modes; a runtime under a 0700 home (pyenv
    under /root) would then stay closed to the sandbox's user. Its parents are made searchable instead: nothing else
    of the home is in the sandbox."""
    parents = []
    parent = os.path.dirname(path)
    while parent not in ("/", "") and not parent.startswith("/usr"):
        parents.append(parent)
        parent = os.path.dirname(parent)
    return [argument for folder in reversed(parents) for argument in ("--perms", "0755", "--dir", folder)]


def sandbox_command(workdir: str, inner: list[str]) -> list[str]:
    """The bwrap command line that runs `inner` with `workdir` mounted read-only at /sandbox."""
    bwrap = shutil.which("bwrap")
    runtime = sys.base_prefix
    command = [bwrap, "--die-with-parent", "--new-session", "--as-pid-1", "--unshare-ipc", "--unshare-pid",
               "--unshare-net", "--unshare-uts", "--unshare-cgroup-try", *_system_binds(),
               *_open_parents(runtime), "--ro-bind", runtime, runtime, "--ro-bind", SANDBOX, INSIDE_SUPERVISOR,
               "--ro-bind", workdir, INSIDE_FOLDER, "--chdir", INSIDE_FOLDER, "--proc", "/proc", "--dev", "/dev",
               "--clearenv", "--setenv", "PATH", "/usr/bin:/bin"]
    if os.geteuid() == 0:
        # root: no user namespace (its root would be the real root to the kernel, exempt from the process limit);
        # setpriv becomes nobody and drops every capability, for good, before the interpreter starts
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        command += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                    "--cap-add", "CAP_SETPCAP", "--",  # SETPCAP: for setpriv to empty the bounding set
                    setpriv, f"--reuid={SANDBOX_USER}", f"--regid={SANDBOX_USER}", "--clear-groups",
                    "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--", *inner]
    else:
        command += ["--unshare-user", "--cap-drop", "ALL", "--", *inner]
    return command


def _user_processes(uid: int) -> int:
    count = 0
    for name in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if name.isdigit():
            try:
                count += os.stat(f"/proc/{name}").st_uid == uid
            except OSError:
                continue
    return count


@functools.cache
def sandbox_problem() -> str | None:
    """Why programs cannot be sandboxed here (None when they can): checked once per process by running `true`."""
    if not sys.platform.startswith("linux"):
        return "the sandbox needs Linux namespaces (bubblewrap)"
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed: install it (apt install bubblewrap, dnf install bubblewrap)"
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    with tempfile.TemporaryDirectory(prefix="hf_smallllm_exec_") as workdir:
        os.chmod(workdir, 0o755)
        probe = subprocess.run(sandbox_command(workdir, [_python(), "-I", "-c", "pass"]), capture_output=True,
                               text=True, stdin=subprocess.DEVNULL)
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]
        return f"bubblewrap cannot create a sandbox here ({reason}); user namespaces may be disabled"
    return None


def execute(program: str, timeout: float = DEFAULT_TIMEOUT) -> ExecutionResult:
    """Run `program` in the bubblewrap sandbox under `code_sandbox` (own session, every descendant killed at the
    end, process, CPU, memory and file limits); requires `HF_ALLOW_CODE_EVAL=1` and bubblewrap."""
    if os.environ.get(ALLOW_ENV) != "1":
        raise CodeExecutionNotAllowed(
            f"executing model-written code is disabled; set {ALLOW_ENV}=1 (the eval command does so with "
            "--confirm-run-unsafe-code) after reading the safety note in docs/evaluation.md")
    problem = sandbox_problem()
    if problem is not None:
        raise CodeExecutionNotAllowed(f"model-written code runs only in a sandbox, and {problem}")
    with tempfile.TemporaryDirectory(prefix="hf_smallllm_exec_") as workdir:
        path = os.path.join(workdir, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(program)
        os.chmod(workdir, 0o755)  # readable by the sandbox's user (nobody, as root), mounted read-only
        os.chmod(path, 0o644)
        root = os.geteuid() == 0
        # the user's processes now, the supervisor (and bwrap's monitor, which runs as the user unless we are root),
        # then the program's allowance, itself included
        process_cap = _user_processes(SANDBOX_USER if root else os.getuid()) + (1 if root else 2) + MAX_PROCESSES
        inner = [_python(), "-I", INSIDE_SUPERVISOR, str(timeout), str(MEMORY_LIMIT), str(process_cap),
                 f"{INSIDE_FOLDER}/program.py"]
        command = sandbox_command(workdir, inner)
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
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        return ExecutionResult(**json.loads(lines[-1]))
    except (IndexError, ValueError, TypeError) as err:
        raise RuntimeError(f"the code-execution supervisor gave no result ({err}): {out[-200:]!r}") from None


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
