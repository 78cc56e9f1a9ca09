"""Evaluation: per-domain validation during training, Skywork's cross-tokenizer domain perplexity, sliding-window
perplexity, Skywork's contamination check, and benchmarks through lm-eval with shipped offline tasks.

| file | owns |
|---|---|
| `losses.py` | per-document token losses of a causal LM (the one place that runs a model over text) |
| `documents.py` | reading domain files into documents; the bundled validation domains |
| `domain_ppl.py` | Skywork's domain perplexity and cross-tokenizer normalisation |
| `domain_validation.py` | `DomainValidator` and the `DomainEvalCallback` for training loops |
| `plot.py` | the PNG of per-domain validation curves |
| `recipe.py` | the training recipe's `domain_eval:` section |
| `sliding_window.py` | perplexity of texts longer than the context |
| `contamination.py` | delta1 / delta2 contamination check |
| `contamination_demo.py` | tiny clean vs contaminated models showing the check at work |
| `harness.py` | lm-eval glue and the shipped local tasks |
| `code_execution.py` | running HumanEval programs (opt-in) and pass@k |
| `benchmark_data.py` | how the shipped benchmark files are built |
| `paper_tables.py` | the papers' benchmark tables (data in `resources/paper_tables/`) run through lm-eval |
| `snapshots_eval.py` | every snapshot of a run or Hub repo: perplexity and tasks, resumable, table, plot, model-index |
"""

from .contamination import ContaminationReport, SplitLoss, compare_splits, contamination_check, load_qa_texts
from .contamination_demo import ContaminationDemo, demonstrate_contamination
from .documents import Domain, default_domains, read_documents, resolve_domains
from .domain_ppl import (
    DomainPerplexityReport,
    DomainScore,
    ModelDomainPerplexity,
    default_max_chars,
    load_domain_documents,
    reference_token_counts,
    score_model,
)
from .domain_validation import DomainEvalCallback, DomainValidator
from .harness import TASKS_DIR, local_task_names, results_table, run_benchmarks, summary
from .losses import DocumentLoss, document_losses, pooled_loss
from .plot import plot_domain_curves
from .recipe import build_domain_eval_callbacks
from .sliding_window import SlidingWindowResult, sliding_window_perplexity

__all__ = [
    "TASKS_DIR",
    "ContaminationDemo",
    "ContaminationReport",
    "DocumentLoss",
    "Domain",
    "DomainEvalCallback",
    "DomainPerplexityReport",
    "DomainScore",
    "DomainValidator",
    "ModelDomainPerplexity",
    "SlidingWindowResult",
    "SplitLoss",
    "build_domain_eval_callbacks",
    "compare_splits",
    "contamination_check",
    "default_domains",
    "default_max_chars",
    "demonstrate_contamination",
    "document_losses",
    "load_domain_documents",
    "load_qa_texts",
    "local_task_names",
    "plot_domain_curves",
    "pooled_loss",
    "read_documents",
    "reference_token_counts",
    "resolve_domains",
    "results_table",
    "run_benchmarks",
    "score_model",
    "sliding_window_perplexity",
    "summary",
]
