"""The CPU half of the GPU check: part selection, the plan (dry run), the report format, time limits that keep
what a part found, the wheel list, and the correctness parts' code run on CPU."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from hf_smallllm.testing import gpu_check
from hf_smallllm.testing.gpu_check import PART_NAMES, Check, PartResult, plan, select_parts

ROOT = Path(__file__).resolve().parents[2]


def _args(*argv: str):
    args = gpu_check.build_parser().parse_args(list(argv))
    args.device = args.device or "cuda"
    return args


@pytest.mark.parametrize("spec, expected", [
    (None, list(PART_NAMES)),
    ("all", list(PART_NAMES)),
    ("decode,env", ["env", "decode"]),  # run order, not the order asked
    ("-fsdp,-bitsandbytes", [n for n in PART_NAMES if n not in ("fsdp", "bitsandbytes")]),
])
def test_select_parts(spec, expected):
    assert [p.name for p in select_parts(spec)] == expected


def test_unknown_part_is_named():
    with pytest.raises(ValueError, match="unknown part.*nosuch.*choose from env"):
        select_parts("env,nosuch")


def test_plan_on_cpu_skips_parts_that_need_cuda_and_respects_the_budget():
    rows = {r["part"]: r["action"] for r in plan(_args("--device", "cpu"))}
    assert rows["train_speed"] == rows["bitsandbytes"] == rows["fsdp"] == "skip: needs CUDA"
    assert rows["backends"] == "run"
    tight = {r["part"]: r["action"] for r in plan(_args("--budget-s", "100"))}
    assert tight["env"] == "run" and tight["backends"] == "run"  # 20 + 40 s
    assert tight["compile"].startswith("skip: budget")


def test_planned_parts_fit_the_default_budget_inside_one_device_command():
    total = sum(p.budget_s for p in gpu_check.PARTS)
    assert total <= gpu_check.DEFAULT_BUDGET_S <= 600 - 60  # a command may run 10 minutes; leave start-up time


def test_dry_run_plans_every_part():
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", "/nonexistent"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in PART_NAMES:
        assert re.search(rf"^{name}\s+run", done.stdout, re.M), done.stdout
    assert "budget 540 s" in done.stdout
    assert not Path("/nonexistent").exists()  # planned, nothing written


def test_shell_front_dry_run_without_carried_wheels(tmp_path):
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", "--parts", "env,decode"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin",
                                                                              "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    assert "env " in done.stdout and "decode " in done.stdout and "fsdp" not in done.stdout


def test_bad_options_are_one_line_errors(capsys):
    assert gpu_check.main(["--dry-run", "--parts", "nosuch"]) == 2
    assert gpu_check.main(["--dry-run", "--families", "llama"]) == 2
    err = capsys.readouterr().err
    assert "unknown part(s) nosuch" in err and "unknown families llama" in err


def _report():
    results = [
        PartResult("env", "ok", 3.0, [Check("transformers", True)],
                   {"cuda": {"name": "NVIDIA H200", "memory_GiB": 139.8, "capability": "9.0"},
                    "bf16_matmul_tflops": 790.1, "hbm_bandwidth_GBps": 4300.0}),
        PartResult("backends", "failed", 20.0, [Check("btlm-sdpa-bfloat16", False, 0.2, 0.03, "a\nmulti | line")]),
        PartResult("fsdp", "timeout", 120.0, [], {}, "killed after 120 s"),
    ]
    return gpu_check.make_report(results, _args())


def test_report_json_round_trips_and_markdown_keeps_one_row_per_part(tmp_path):
    report = _report()
    json_path, md_path = gpu_check.write_report(report, tmp_path / "out")
    loaded = json.loads(json_path.read_text())
    assert loaded["format_version"] == gpu_check.FORMAT_VERSION
    assert loaded["summary"] == {"ok": 1, "failed": 1, "timeout": 1}
    assert PartResult.from_dict(loaded["parts"][1]).checks[0].limit == 0.03
    md = md_path.read_text()
    assert "NVIDIA H200 (139.8 GiB" in md and "790.1 TFLOP/s" in md
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert any(line.startswith("| backends | failed | 20.0 | 0/1 | failed: btlm-sdpa-bfloat16") for line in rows)
    assert any("a multi / line" in line for line in rows)  # detail flattened into its cell
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left


def test_a_part_that_raises_keeps_its_checks_and_reports_the_error(monkeypatch):
    def broken(rec, args):
        rec.check("first", 0.5, 1.0)
        rec.attempt("second", lambda: 1 / 0)
        raise RuntimeError("CUDA error: device-side assert")

    monkeypatch.setitem(gpu_check.PART_FUNCTIONS, "env", broken)
    result = gpu_check.run_part_here("env", _args())
    assert result.status == "error" and "device-side assert" in result.error
    assert [(c.name, c.passed) for c in result.checks] == [("first", True), ("second", False)]
    assert "ZeroDivisionError" in result.checks[1].detail


def test_a_part_killed_at_its_time_limit_still_reports_what_it_found(monkeypatch, tmp_path):
    """The child records after every check; the parent kills it at the limit and reads what is there."""
    script = tmp_path / "child.py"
    script.write_text(
        "import json, sys, time\n"
        "path = sys.argv[sys.argv.index('--result-file') + 1]\n"
        "json.dump({'name': 'env', 'status': 'timeout', 'seconds': 0.1, 'measurements': {'x': 1},\n"
        "           'checks': [{'name': 'early', 'passed': True}], 'error': ''}, open(path, 'w'))\n"
        "time.sleep(60)\n")
    monkeypatch.setattr(gpu_check, "_child_args", lambda args, part, f: [sys.executable, str(script),
                                                                         "--result-file", f])
    monkeypatch.setattr(gpu_check, "PARTS", (gpu_check.Part("env", 1, False, "test"),))
    report = gpu_check.run_all(_args("--parts", "env", "--budget-s", "100"), progress=lambda *_: None)
    (part,) = report["parts"]
    assert part["status"] == "timeout" and part["error"].startswith("killed after")
    assert part["checks"][0]["name"] == "early" and part["measurements"] == {"x": 1}
    assert part["seconds"] < 30


def test_recorder_fails_nan_and_missing_values():
    rec = gpu_check.Recorder()
    rec.check("nan", float("nan"), 1.0)
    rec.check("none", None, 1.0)
    rec.check("ok", 1.0, 1.0)
    assert [c.passed for c in rec.checks] == [False, False, True]


def test_wheel_list_is_pinned_and_satisfies_the_package_requirements():
    import tomllib

    pins = {}
    for line in (ROOT / "benchmarks" / "gpu_wheels.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            pins[requirement.name] = Version(spec.version)
    assert {"transformers", "bitsandbytes"} <= set(pins)
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dependency in map(Requirement, dependencies):
        if dependency.name in pins:
            assert pins[dependency.name] in dependency.specifier, (dependency, pins[dependency.name])


@pytest.mark.slow
def test_correctness_parts_run_on_cpu():
    """The code the GPU run will execute, on CPU with eager vs sdpa (flex and flash are GPU-run only here)."""
    args = _args("--device", "cpu", "--families", "btlm,geb", "--dtypes", "float32", "--attn", "sdpa",
                 "--alibi-length", "96")
    for name in ("backends", "packed", "alibi"):
        result = gpu_check.run_part_here(name, args)
        assert result.status == "ok", (name, result.error, [c for c in result.checks if not c.passed])
        assert result.checks
