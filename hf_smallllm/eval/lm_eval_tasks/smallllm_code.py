"""HumanEval's filter and metric for `smallllm_humaneval.yaml` (`!function smallllm_code.pass_at_k`)."""

from hf_smallllm.eval.code_execution import build_predictions, pass_at_k  # noqa: F401
