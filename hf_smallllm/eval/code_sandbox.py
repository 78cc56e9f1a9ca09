"""The supervisor inside the sandbox: runs one model-written program and leaves no process of it behind (standard
library only).

`code_execution.execute` starts it inside bubblewrap (`bwrap`), which gives it and the program their own mount,
PID, network, IPC and UTS namespaces: the file system holds only the Python runtime, the system libraries and the
program's own folder, all read-only; there is no network; no process outside can be seen or signalled. As root the
sandbox runs as `nobody` (setpriv drops every capability), so the kernel's process limit applies. This supervisor is
PID 1 of the sandbox (`bwrap --as-pid-1`), so every orphan is re-parented to it, and it is not dumpable, so the
program (same user) cannot attach to it.

Called as `python -I code_sandbox.py TIMEOUT MEMORY PROCESS_CAP PROGRAM`, it prints one JSON line,
{"returncode", "timed_out", "leftovers"}, and exits 0 (3 with a message on stderr when the program could not be
started). The program's own stdin, stdout and stderr are /dev/null: what it prints can neither mix with that line
nor fill the evaluator's memory. Containment inside, each piece for a mistake seen in practice:

- The program runs in its own session (`setsid`), so one `killpg` reaches everything it forked that stayed in it;
  descendants that left it are found as this process's children. After the program exits or times out, every
  remaining descendant is killed and reaped. A program that exits while descendants still run fails: it could have
  exited 0 before its forked copy ran the tests.
- `RLIMIT_NPROC` (PROCESS_CAP: the user's processes at start plus the program's allowance, counted outside),
  CPU seconds, address space, file size, no core dumps (POSIX `setrlimit`).
"""

import json
import os
import resource
import signal
import sys
import time

FILE_SIZE_LIMIT = 16 << 20  # bytes per file the program writes
# linux/prctl.h
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 4, 36, 38
SETUP_FAILED = 3


LINUX = sys.platform.startswith("linux")


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _harden_supervisor() -> None:
    """Orphans come back to this process (it is PID 1 of the sandbox anyway), and the program, which runs as the
    same user, cannot ptrace it or read its memory and descriptors."""
    if LINUX:
        libc = _libc()
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def _processes() -> list[tuple[int, int, int, int, bytes]]:
    """(pid, ppid, pgrp, uid, state) of every process, read from /proc (empty where there is no /proc)."""
    found = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            found.append((int(name), int(fields[1]), int(fields[2]), os.stat(f"/proc/{name}").st_uid, fields[0]))
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    return found


def _limit(process_cap: int, timeout: float, memory: int) -> None:
    cpu = int(timeout) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if hasattr(resource, "RLIMIT_NPROC"):
        resource.setrlimit(resource.RLIMIT_NPROC, (process_cap, process_cap))


def _start(program: str, timeout: float, memory: int, process_cap: int) -> tuple[int, int]:
    """Fork the program's process; returns (pid, read end of a pipe that carries an exec failure)."""
    workdir = os.path.dirname(os.path.abspath(program))
    failure_read, failure_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(failure_read)
            os.setsid()
            os.chdir(workdir)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):  # what the program prints goes nowhere: it cannot corrupt or flood the result
                os.dup2(null, fd)
            _limit(process_cap, timeout, memory)
            os.set_inheritable(failure_write, False)
            environment = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
                           "HOME": workdir}
            os.execve(sys.executable, [sys.executable, "-I", program], environment)
        except BaseException as err:  # noqa: BLE001 - whatever stops the exec is reported, then the child ends
            os.write(failure_write, f"{type(err).__name__}: {err}".encode())
        finally:
            os._exit(127)
    os.close(failure_write)
    return pid, failure_read


def _descendants(pid: int, running: bool = False) -> list[int]:
    """Processes left of the program: the supervisor's other children (re-parented orphans, thanks to the
    subreaper) and members of the program's process group; `running` leaves out zombies (exited, not reaped)."""
    me = os.getpid()
    return [p for p, ppid, pgrp, _, state in _processes()
            if p != pid and (ppid == me or pgrp == pid) and not (running and state == b"Z")]


def _kill_all(pid: int) -> None:
    """SIGKILL the program's group and every descendant, repeatedly (a killed process's children are re-parented to
    us), and reap them, until the supervisor has no child left."""
    while True:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        for process in _descendants(pid):
            try:
                os.kill(process, signal.SIGKILL)
            except OSError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return
        time.sleep(0.005)


def main(argv: list[str]) -> int:
    timeout, memory, process_cap, program = float(argv[0]), int(argv[1]), int(argv[2]), argv[3]
    _harden_supervisor()
    pid, failure_read = _start(program, timeout, memory, process_cap)
    failure = b""
    while chunk := os.read(failure_read, 4096):  # closed on a successful exec
        failure += chunk
    os.close(failure_read)
    if failure:
        os.waitpid(pid, 0)
        print(f"cannot start the program: {failure.decode(errors='replace')}", file=sys.stderr)
        return SETUP_FAILED
    deadline = time.monotonic() + timeout
    status, timed_out = None, False
    while status is None:
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(code)
        elif time.monotonic() > deadline:
            timed_out = True
            break
        else:
            time.sleep(0.005)
    leftovers = 0 if timed_out else len(_descendants(pid, running=True))
    if not leftovers and not timed_out:
        try:  # without /proc: is anything of the program's group alive?
            os.killpg(pid, 0)
            leftovers = 1
        except OSError:
            pass
    _kill_all(pid)
    print(json.dumps({"returncode": status, "timed_out": timed_out, "leftovers": leftovers}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
