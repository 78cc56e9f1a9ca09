"""lm-eval task definitions for the package's offline benchmarks: this folder is lm-eval's `--include_path` as it is.

    lm_eval --model hf --model_args pretrained=CKPT,trust_remote_code=True \\
        --include_path "$(hf-smallllm eval tasks --path)" --tasks smallllm_mmlu,smallllm_zh_poet

Tasks: `smallllm_mmlu` (group) / `smallllm_mmlu_<subject>` (five MMLU subjects, lm-eval's MMLU prompt, accuracy),
`smallllm_zh_poet` (which of four poets wrote a Song ci, accuracy), `smallllm_longeval_lines` (LongEval-style line
retrieval at 20-100 lines, exact match; see hf_smallllm/longctx/longeval.py), `smallllm_humaneval` (pass@1; executes
model-written code, so lm-eval runs it only with `--confirm_run_unsafe_code`, and the package's execution guard
only with HF_ALLOW_CODE_EVAL=1, see docs/evaluation.md). The data are the shipped files in
`hf_smallllm/resources/benchmarks/`, found relative to this folder by `smallllm_data.py` (lm-eval resolves
`!function module.name` next to the YAML file), so no paths are rendered into the YAMLs. `smallllm_code.py` brings
the HumanEval filter and metric from `hf_smallllm.eval.code_execution`. The subject files are written from
`_mmlu_subject_template_yaml` (no `.yaml` suffix, so lm-eval does not index it) by `write_mmlu_subject_tasks`.
"""

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
SUBJECT_TEMPLATE = TASKS_DIR / "_mmlu_subject_template_yaml"


def write_mmlu_subject_tasks(subjects: list[str]) -> list[Path]:
    """(Re)write `smallllm_mmlu_<subject>.yaml` for each subject from the template; returns the files."""
    from string import Template

    template = Template(SUBJECT_TEMPLATE.read_text(encoding="utf-8"))
    written = []
    for subject in subjects:
        path = TASKS_DIR / f"smallllm_mmlu_{subject}.yaml"
        path.write_text(template.substitute(subject=subject, subject_words=subject.replace("_", " ")), encoding="utf-8")
        written.append(path)
    return written


__all__ = ["SUBJECT_TEMPLATE", "TASKS_DIR", "write_mmlu_subject_tasks"]
