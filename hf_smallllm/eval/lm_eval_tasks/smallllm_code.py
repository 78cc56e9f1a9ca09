"""HumanEval's filter and metric for `smallllm_humaneval.yaml` (`!function smallllm_code.pass_at_k`).

The code lives in `hf_smallllm/eval/code_execution.py` (with its sandbox supervisor beside it); it is loaded here by
file path, not through `import hf_smallllm`, so that `lm_eval --include_path <this folder>` works in an environment
where the package itself is not importable, as the other tasks of this folder do (numpy is the one dependency).
"""

import importlib.util
import sys
from pathlib import Path

_NAME = "_smallllm_code_execution"


def _code_execution():
    module = sys.modules.get(_NAME)
    if module is None:
        path = Path(__file__).resolve().parents[1] / "code_execution.py"
        spec = importlib.util.spec_from_file_location(_NAME, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[_NAME] = module  # before running it: its dataclasses look their module up
        spec.loader.exec_module(module)
    return module


build_predictions = _code_execution().build_predictions
pass_at_k = _code_execution().pass_at_k
