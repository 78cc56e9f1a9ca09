"""The supervisor that runs one model-written program and leaves no process of it behind (standard library only).

`code_execution.execute` starts it by file path (`python -I code_sandbox.py TIMEOUT MEMORY MAX_PROCESSES PROGRAM`);
it prints one JSON line, {"returncode", "timed_out", "leftovers"}, and exits 0 (3 with a message on stderr when
the program could not be started at all). Containment, each piece for a mistake seen in practice:

- The program runs in its own session (`setsid`), so one `killpg` reaches everything it forked that stayed in it.
- On Linux the supervisor is a child subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`): a descendant that left the
  session (`setsid` again, double fork) is re-parented to the supervisor instead of init, so walking the
  supervisor's children finds it. After the program exits or times out, every remaining descendant is killed and
  reaped. A program that exits while descendants still run fails: it could have exited 0 before its forked copy ran
  the tests.
- Process count: `RLIMIT_NPROC` caps the processes of the program's real user. The kernel never applies it to
  root (uid 0 is exempt whatever its capabilities), so when the supervisor runs as root the program runs as the
  unprivileged `nobody` user, to whom it applies; the limit is that user's processes at start plus MAX_PROCESSES.
  Where `nobody` cannot read the interpreter (pyenv under a 0700 /root), it keeps one capability,
  CAP_DAC_READ_SEARCH (read any file, as root could), through exec as an ambient capability, and nothing else: it
  cannot write outside world-writable places and its own folder. `no_new_privs` stops setuid programs from giving
  root back.
- Per process: CPU seconds, address space, file size, no core dumps (POSIX `setrlimit`).

This contains accidents and careless code, not a determined attacker (network, the file system readable by
`nobody`): run untrusted models' code in a container or VM.
"""

import json
import os
import resource
import signal
import sys
import time

FILE_SIZE_LIMIT = 16 << 20  # bytes per file the program writes
# linux/prctl.h and linux/capability.h
PR_SET_KEEPCAPS, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 8, 36, 38, 47, 2
CAP_DAC_READ_SEARCH, LINUX_CAPABILITY_VERSION_3 = 2, 0x20080522
SETUP_FAILED = 3


LINUX = sys.platform.startswith("linux")


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _become_subreaper() -> bool:
    return LINUX and _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _readable_by_others(python: str) -> bool:
    """Whether a user other than the owner can run `python` and read its standard library (every folder on the
    way searchable, the files readable)."""
    import stat
    import sysconfig

    def open_to_others(path: str, bits: int) -> bool:
        path = os.path.realpath(path)
        if os.stat(path).st_mode & bits != bits:
            return False
        parent = os.path.dirname(path)
        while parent != os.path.dirname(parent):
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
            parent = os.path.dirname(parent)
        return True

    stdlib = os.path.join(sysconfig.get_paths()["stdlib"], "os.py")
    return open_to_others(python, stat.S_IXOTH | stat.S_IROTH) and open_to_others(stdlib, stat.S_IROTH)


def _drop_root(uid: int, gid: int, keep_read: bool) -> None:
    """In the program's process, before exec: become `uid`/`gid`, keeping CAP_DAC_READ_SEARCH across exec only if
    `keep_read`; on Linux also `no_new_privs`."""
    import ctypes

    libc = _libc() if LINUX else None
    if keep_read:
        libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if keep_read:
        bit = 1 << CAP_DAC_READ_SEARCH
        header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
        data = (ctypes.c_uint32 * 6)(bit, bit, bit, 0, 0, 0)  # effective, permitted, inheritable (two words)
        if libc.capset(header, data) != 0 or libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE,
                                                        CAP_DAC_READ_SEARCH, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "cannot keep CAP_DAC_READ_SEARCH for the interpreter")
    if LINUX and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "cannot set no_new_privs")


def _sandbox_user() -> tuple[int, int] | None:
    """(uid, gid) to run the program as: `nobody` when we are root (so RLIMIT_NPROC applies), else None."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


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


def _limit(max_processes: int, uid: int, timeout: float, memory: int) -> None:
    cpu = int(timeout) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # this process is among the user's existing ones; the program may have max_processes in all
    cap = sum(1 for process in _processes() if process[3] == uid) - 1 + max_processes
    if hasattr(resource, "RLIMIT_NPROC"):
        resource.setrlimit(resource.RLIMIT_NPROC, (cap, cap))


def _start(program: str, timeout: float, memory: int, max_processes: int) -> tuple[int, int]:
    """Fork the program's process; returns (pid, read end of a pipe that carries an exec failure)."""
    user = _sandbox_user()
    workdir = os.path.dirname(os.path.abspath(program))
    # the base interpreter: a virtual environment adds nothing the program may import
    python = getattr(sys, "_base_executable", None) or sys.executable
    keep_read = user is not None and LINUX and not _readable_by_others(python)
    if user is not None:
        for path in (workdir, program):
            os.chown(path, *user)
    failure_read, failure_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(failure_read)
            os.setsid()
            os.chdir(workdir)
            if user is not None:
                _drop_root(*user, keep_read)
            _limit(max_processes, os.getuid(), timeout, memory)
            os.set_inheritable(failure_write, False)
            environment = {"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
                           "HOME": workdir}
            os.execve(python, [python, "-I", program], environment)
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
    timeout, memory, max_processes, program = float(argv[0]), int(argv[1]), int(argv[2]), argv[3]
    _become_subreaper()
    pid, failure_read = _start(program, timeout, memory, max_processes)
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
