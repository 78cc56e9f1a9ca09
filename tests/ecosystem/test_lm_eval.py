"""Plain `lm_eval` (in a process where hf_smallllm cannot be imported: the checkpoint's own remote code, the task
folder as `--include_path` with no render step) scores a training checkpoint exactly as `hf-smallllm eval lm-eval`
does."""

import json

import pytest

from .conftest import pretrain_recipe, run_python

LIMIT = 12
TASK = "smallllm_zh_poet"

RUN_LM_EVAL = """
import glob, json, sys
from lm_eval.__main__ import cli_evaluate
sys.argv = ["lm_eval", *ARGS]
cli_evaluate()
found = sorted(glob.glob(OUTPUT + "/**/results_*.json", recursive=True))
print("RESULT " + json.dumps(json.load(open(found[-1]))["results"]))
"""

RUN_OURS = """
import glob, json, sys
from hf_smallllm.cli import main
assert main(["eval", "lm-eval", *ARGS]) == 0
found = sorted(glob.glob(OUTPUT + "/**/results_*.json", recursive=True))
print("RESULT " + json.dumps(json.load(open(found[-1]))["results"]))
"""


def _arguments(checkpoint, output, include_path=None, remote_code=False) -> list[str]:
    model_args = f"pretrained={checkpoint},dtype=float32" + (",trust_remote_code=True" if remote_code else "")
    arguments = ["run", "--model", "hf", "--model_args", model_args, "--tasks", TASK, "--limit", str(LIMIT),
                 "--device", "cpu", "--batch_size", "4", "--seed", "0", "--output_path", str(output)]
    return arguments + (["--include_path", str(include_path)] if include_path else [])


@pytest.mark.slow
def test_plain_lm_eval_scores_a_training_checkpoint_like_the_package(tokenizer_dir, tmp_path):
    from hf_smallllm.eval.harness import TASKS_DIR
    from hf_smallllm.train.api import run_pretraining

    checkpoint = run_pretraining(pretrain_recipe(tokenizer_dir, tmp_path / "run", "btlm", max_steps=3)).final_checkpoint
    plain_args = _arguments(checkpoint, tmp_path / "plain", TASKS_DIR, remote_code=True)
    plain = run_python(f"ARGS = {plain_args!r}\nOUTPUT = {str(tmp_path / 'plain')!r}\n" + RUN_LM_EVAL, tmp_path)
    ours_args = _arguments(checkpoint, tmp_path / "ours")
    ours = run_python(f"ARGS = {ours_args!r}\nOUTPUT = {str(tmp_path / 'ours')!r}\n" + RUN_OURS, tmp_path,
                      blocked=False)
    assert plain[TASK]["acc,none"] == ours[TASK]["acc,none"], json.dumps([plain, ours])
    assert 0.0 <= plain[TASK]["acc,none"] <= 1.0
