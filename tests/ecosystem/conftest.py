"""Helpers for the ecosystem tests: run Python in a subprocess where hf_smallllm cannot be imported, the way
lm-eval, `pipeline` or TRL see a folder we wrote; and tiny folders of each kind the package writes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
FIXTURES_BTLM = REPO / "tests" / "fixtures" / "btlm-tiny"  # BTLM official layout

# Inserted first on sys.meta_path: the editable install's finder, PYTHONPATH and the working directory all come
# after it, so no copy of the package can be imported.
BLOCK_HF_SMALLLLM = """
import sys
class _BlockHfSmallllm:
    def find_spec(self, name, path=None, target=None):
        if name == "hf_smallllm" or name.startswith("hf_smallllm."):
            raise ImportError("hf_smallllm is blocked in this process")
sys.meta_path.insert(0, _BlockHfSmallllm())
try:
    import hf_smallllm
    raise SystemExit("hf_smallllm was importable")
except ImportError:
    pass
"""


def subprocess_env(tmp_path: Path, with_package: bool = False) -> dict:
    """Offline environment with its own HF_HOME (transformers copies remote code into HF_HOME/modules); PYTHONPATH
    points at this checkout only when the package is meant to be importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "PYTHONPATH"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false",
               TRANSFORMERS_VERBOSITY="error")
    if with_package:
        env["PYTHONPATH"] = str(REPO)
    return env


def run_python(code: str, tmp_path: Path, *, blocked: bool = True, timeout: int = 600) -> dict:
    """Run `code` (with the package blocked unless `blocked=False`) and return the JSON it printed on a line
    starting with RESULT."""
    script = (BLOCK_HF_SMALLLLM if blocked else "") + code
    workdir = tmp_path / "subprocess-cwd"
    workdir.mkdir(exist_ok=True)
    completed = subprocess.run([sys.executable, "-c", script], env=subprocess_env(tmp_path, not blocked),
                               cwd=workdir, capture_output=True, text=True, timeout=timeout)
    assert completed.returncode == 0, completed.stderr[-4000:]
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, completed.stdout[-2000:] + completed.stderr[-2000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="session")
def tokenizer_dir(corpus_tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    corpus_tokenizer.save_pretrained(folder)
    return folder


def pretrain_recipe(tokenizer_dir, output_dir, family: str, max_steps: int = 2) -> dict:
    """A tiny pretraining run on the bundled corpus: 64-token rows, 4 rows per step, a checkpoint at the end."""
    return {
        "model": {"family": family, "preset": "tiny"},
        "tokenizer": str(tokenizer_dir),
        "data": {"sources": [{"name": "kjv", "paths": ["bundled:en_kjv.txt"], "split_by": "line"}],
                 "seq_len": 64, "tokens_per_step": 256},
        "optimizer": {"lr": 3e-3},
        "schedule": {"type": "constant"},
        "training": {"output_dir": str(output_dir), "max_steps": max_steps, "save_steps": max_steps,
                     "logging_steps": 1, "tensorboard": False, "progress_bar": False},
    }
