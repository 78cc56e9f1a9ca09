"""Model-written programs cannot leave processes behind or fork without bound (issue 22, E1/E2)."""

import os
import time

import pytest

from hf_smallllm.eval.code_execution import ALLOW_ENV, MAX_PROCESSES, execute, run_program

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups and setrlimit are POSIX")


@pytest.fixture(autouse=True)
def allowed(monkeypatch):
    monkeypatch.setenv(ALLOW_ENV, "1")


def survivors(marker: str) -> list[str]:
    """Processes whose command line carries `marker` (each test program sets its title with a unique marker)."""
    found = []
    for name in os.listdir("/proc") if os.path.isdir("/proc") else []:
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(name)
        except OSError:
            continue
    return found


def sleeper(marker: str) -> str:
    """Code that replaces the current (forked) process by a long sleep whose command line holds `marker`."""
    return f"os.execv('/bin/sleep', ['{marker}', '60'])"


def test_passing_and_failing_programs():
    assert run_program("assert sorted([3, 1, 2]) == [1, 2, 3]\n")
    assert not run_program("assert 1 + 1 == 3\n")
    result = execute("while True:\n    pass\n", timeout=1.0)
    assert result.timed_out and not result.passed


@pytest.mark.skipif(not os.path.exists("/bin/sleep"), reason="needs /bin/sleep")
def test_a_program_that_forks_and_exits_fails_and_its_child_is_killed():
    marker = "hf-smallllm-e1-exit"
    # the child leaves the program's session too (setsid), which escapes a process-group kill
    result = execute(f"import os\nif os.fork() == 0:\n    os.setsid()\n    {sleeper(marker)}\n")
    assert result.returncode == 0 and result.leftovers >= 1 and not result.passed
    assert survivors(marker) == []


@pytest.mark.skipif(not os.path.exists("/bin/sleep"), reason="needs /bin/sleep")
def test_the_timeout_kills_every_descendant():
    marker = "hf-smallllm-e1-timeout"
    program = (f"import os\nfor _ in range(3):\n    if os.fork() == 0:\n        os.setsid()\n"
               f"        if os.fork() == 0:\n            {sleeper(marker)}\n        os._exit(0)\n"
               "while True:\n    pass\n")
    result = execute(program, timeout=1.5)
    assert result.timed_out and not result.passed
    time.sleep(0.1)
    assert survivors(marker) == []


@pytest.mark.skipif(not os.path.exists("/bin/sleep"), reason="needs /bin/sleep")
def test_the_number_of_processes_is_limited():
    marker = "hf-smallllm-e2-bomb"
    # exits 0 only when a fork is refused before 200: the limit holds (also when the tests run as root)
    program = (f"import os\nn = 0\ntry:\n    for _ in range(200):\n        if os.fork() == 0:\n"
               f"            {sleeper(marker)}\n        n += 1\nexcept OSError:\n    pass\n"
               f"print(n)\nraise SystemExit(0 if n < {MAX_PROCESSES} else 1)\n")
    result = execute(program)
    assert result.returncode == 0, result
    assert 0 < result.leftovers < MAX_PROCESSES
    assert survivors(marker) == []


def test_subprocesses_that_finish_are_fine():
    program = ("import subprocess, sys\n"
               "completed = subprocess.run([sys.executable, '-c', 'print(6 * 7)'], capture_output=True)\n"
               "assert completed.stdout == b'42\\n'\n")
    assert run_program(program)


@pytest.mark.skipif(os.geteuid() != 0, reason="the privilege drop happens only when running as root")
def test_as_root_programs_run_as_nobody_and_cannot_write_root_files(tmp_path):
    assert run_program("import os\nassert os.getuid() != 0 and os.geteuid() != 0\n")
    target = tmp_path / "owned-by-root"
    target.write_text("keep")
    assert not run_program(f"open({str(target)!r}, 'w').write('gone')\n")
    assert target.read_text() == "keep"
