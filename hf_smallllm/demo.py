"""`hf-smallllm demo`: the life of a small open LLM on one machine, from the bundled corpus to the Hub and back.

1. train a bilingual DeepSeek-style byte-level BPE tokenizer (digits split) on the bundled corpus;
2. pretrain a tiny model of the chosen family from its `tiny-<family>` recipe: packed rows with the attention reset
   at every EOS, a two-stage data mixture, per-domain validation during training;
3. publish intermediate snapshots (one branch each) and the final model with its model card, while training runs,
   to a local server speaking the Hub's protocol on 127.0.0.1 (or to a real Hub with `repo_id` and a token);
4. reload a snapshot in a fresh Python process with `AutoModelForCausalLM.from_pretrained(repo, revision=branch)`
   and check its logits against the local checkpoint;
5. generate English and Chinese text with the final model;
6. compare the first snapshot and the final model by domain perplexity (Skywork's method);
7. draw the training and validation curves.

Nothing is downloaded; everything is written under one output folder, and a summary says where.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageFileExistsError, UsageValueError
from .families import FAMILIES

TOKENIZER_FILES = ["bundled:en_shakespeare.txt", "bundled:en_kjv.txt", "bundled:en_pydoc.txt",
                   "bundled:zh_poetry.jsonl", "bundled:code_python.jsonl"]
PROMPTS = {"en": "ROMEO. What light", "zh": "春风"}


@dataclass
class DemoSettings:
    output_dir: str = "smallllm-demo"
    family: str = "tinyllama"
    steps: int = 240  # optimizer steps of 4,096 tokens
    snapshots: int = 3  # intermediate snapshots published as branches (plus the final model on main)
    tokenizer_vocab: int = 4096
    repo_id: str | None = None  # None: a repo on the local Hub server the demo starts
    endpoint: str | None = None  # a real Hub endpoint with repo_id (default: HF_ENDPOINT or huggingface.co)
    overwrite: bool = False
    new_tokens: int = 40
    progress: bool = True
    seed: int = 0


@dataclass
class DemoSummary:
    output_dir: Path
    tokenizer_dir: Path
    run_dir: Path
    final_checkpoint: Path
    repo_id: str
    endpoint: str
    snapshots: list = field(default_factory=list)  # [(branch, step, tokens)]
    reloaded_revision: str = ""
    reload_max_logit_diff: float = float("nan")
    generations: dict = field(default_factory=dict)
    perplexity_table: str = ""
    perplexity_json: Path | None = None
    curves_png: Path | None = None
    seconds: dict = field(default_factory=dict)

    def describe(self) -> str:
        lines = ["", "Summary", "-------",
                 f"tokenizer            {self.tokenizer_dir}",
                 f"training run         {self.run_dir} (metrics.jsonl, checkpoints, TensorBoard runs/)",
                 f"final checkpoint     {self.final_checkpoint}",
                 f"published            {self.repo_id} on {self.endpoint}",
                 *[f"  branch             {b}  (step {s}, {t:,d} tokens)" for b, s, t in self.snapshots],
                 f"reloaded             revision {self.reloaded_revision}: max |logit diff| vs local checkpoint "
                 f"{self.reload_max_logit_diff:.1e}",
                 f"domain perplexity    {self.perplexity_json}",
                 f"learning curves      {self.curves_png}",
                 "time                 " + ", ".join(f"{k} {v:.0f}s" for k, v in self.seconds.items())]
        return "\n".join(lines)


class _Steps:
    def __init__(self, total: int, log):
        self.total, self.number, self.log, self.seconds = total, 0, log, {}

    @contextmanager
    def step(self, name: str, description: str):
        self.number += 1
        self.log(f"\n[{self.number}/{self.total}] {description}")
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start


@contextmanager
def _hub(settings: DemoSettings, root: Path, log):
    """(endpoint, token, repo_id): a local Hub server for the demo's lifetime, or the real Hub settings."""
    if settings.repo_id:
        from huggingface_hub import constants, get_token

        token = get_token()
        if not token:
            raise ValueError("publishing to a real Hub needs a token: set HF_TOKEN or run `hf auth login`")
        yield settings.endpoint or constants.ENDPOINT, token, settings.repo_id
        return
    from huggingface_hub import constants

    from .testing.hub_server import DEFAULT_TOKEN, DEFAULT_USER, start_in_thread

    server = start_in_thread(root)
    log(f"local Hub server on {server.url} (storage {root})")
    previous = {k: os.environ.get(k) for k in ("HF_TOKEN", "HF_HUB_OFFLINE")}
    was_offline = constants.HF_HUB_OFFLINE
    os.environ["HF_TOKEN"] = DEFAULT_TOKEN  # the publishing callback and the client find the token as usual
    os.environ["HF_HUB_OFFLINE"] = "0"
    # Offline mode keeps the client off the internet; the demo's server is on 127.0.0.1, so it may be reached.
    constants.HF_HUB_OFFLINE = False
    try:
        yield server.url, DEFAULT_TOKEN, f"{DEFAULT_USER}/smallllm-demo-{settings.family}"
    finally:
        server.shutdown()
        constants.HF_HUB_OFFLINE = was_offline
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _prepare_output(settings: DemoSettings) -> Path:
    output = Path(settings.output_dir)
    if output.exists() and any(output.iterdir()):
        if not settings.overwrite:
            raise UsageFileExistsError(f"{output} already holds a demo; pass --overwrite to replace it or choose "
                                  "another --output-dir")
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    return output


def _validate(settings: DemoSettings) -> None:
    if settings.family not in FAMILIES:
        raise ValueError(f"--family {settings.family!r}: choose one of {', '.join(FAMILIES)}")
    if settings.steps < 4:
        raise UsageValueError(f"--steps {settings.steps}: the demo needs at least 4 steps (snapshots are taken "
                              "between)")
    if not 1 <= settings.snapshots < settings.steps:
        raise ValueError(f"--snapshots {settings.snapshots} must be between 1 and steps - 1")
    if settings.tokenizer_vocab < 512:
        raise ValueError(f"--tokenizer-vocab {settings.tokenizer_vocab} is too small for bilingual text (>= 512)")


RELOAD_SCRIPT = """
import json, sys, torch
import hf_smallllm  # registers the architectures (without it: trust_remote_code=True)
from transformers import AutoModelForCausalLM
repo, revision, ids, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
model = AutoModelForCausalLM.from_pretrained(repo, revision=revision)
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits
torch.save({"logits": logits, "class": type(model).__name__}, out)
"""


def _reload_in_fresh_process(repo_id: str, revision: str, endpoint: str, token: str, ids: list[int],
                             out: Path) -> dict:
    """What a user elsewhere does: `from_pretrained(repo, revision=...)` against the endpoint, in a new process."""
    import torch

    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_TOKEN": token, "HF_HUB_OFFLINE": "0",
           "TRANSFORMERS_OFFLINE": "0", "HF_HOME": str(out.parent / "hf-home")}
    done = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, repo_id, revision, json.dumps(ids), str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"reloading {repo_id}@{revision} failed:\n{done.stderr[-2000:]}")
    return torch.load(out, weights_only=True)  # a dict of a tensor and a string, written by the script above


def _generate(model, tokenizer, prompt: str, new_tokens: int, seed: int) -> str:
    import torch

    torch.manual_seed(seed)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=True, top_k=20, temperature=0.8,
                                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(output[0], skip_special_tokens=True)


def _domain_perplexity(models: dict, tokenizer, output: Path, progress: bool):
    from .eval.documents import resolve_domains
    from .eval.domain_ppl import (
        DomainPerplexityReport,
        default_max_chars,
        load_domain_documents,
        reference_token_counts,
        score_model,
    )

    first = next(iter(models.values()))
    max_chars = default_max_chars(first.config)
    domains = resolve_domains(None)
    documents = load_domain_documents(domains, max_chars=max_chars, max_documents=16)
    counts = reference_token_counts(tokenizer, documents)
    report = DomainPerplexityReport(reference="demo tokenizer", max_chars=max_chars,
                                    domains={d.name: {"path": str(d.path), "documents": len(documents[d.name]),
                                                      "reference_tokens": counts[d.name]} for d in domains})
    for name, model in models.items():
        report.models.append(score_model(name, model, tokenizer, documents, counts, progress=False))
    path = report.write_json(output / "domain_perplexity.json")
    return report.to_markdown(), path


def run_demo(settings: DemoSettings | None = None, log=print) -> DemoSummary:
    """Run every step of the demo (see the module docstring) and return where everything went."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .tokenization.training import train_tokenizer
    from .train.api import run_pretraining
    from .train.plot import plot_run_curves

    settings = settings or DemoSettings()
    _validate(settings)
    output = _prepare_output(settings)
    steps = _Steps(7, log)
    tokenizer_dir, run_dir = output / "tokenizer", output / "run"

    with steps.step("tokenizer", f"Training a bilingual DeepSeek-style BPE tokenizer ({settings.tokenizer_vocab} "
                                 "entries, digits split) on the bundled corpus"):
        tokenizer = train_tokenizer(TOKENIZER_FILES, family="chuxin", vocab_size=settings.tokenizer_vocab,
                                    output_dir=tokenizer_dir, progress=settings.progress)
        sample = "To be, or not to be: 床前明月光 2024"
        pieces = [tokenizer.decode([i]) for i in tokenizer(sample, add_special_tokens=False)["input_ids"]]
        log(f"{len(tokenizer):,d} entries; {sample!r} -> {pieces}")

    snapshot_every = max(settings.steps // (settings.snapshots + 1), 1)
    with _hub(settings, output / "hub", log) as (endpoint, token, repo_id):
        with steps.step("pretrain", f"Pretraining a tiny {settings.family} model for {settings.steps} steps "
                                    f"(recipe tiny-{settings.family}), publishing a snapshot every {snapshot_every} "
                                    f"steps to {repo_id}"):
            overrides = {
                "tokenizer": str(tokenizer_dir),
                "training.output_dir": str(run_dir),
                "training.max_steps": settings.steps,
                "training.save_steps": snapshot_every,
                "training.logging_steps": max(settings.steps // 40, 1),
                "training.progress_bar": settings.progress,
                "training.seed": settings.seed,
                "schedule.warmup_steps": min(10, settings.steps // 4),
                "domain_eval": {"every_steps": snapshot_every, "max_documents": 8, "plot": "domain_eval.png",
                                "at_start": False},
                "publish": {"repo_id": repo_id, "endpoint": endpoint, "every_steps": snapshot_every, "final": True,
                            "card": {"license": "apache-2.0", "language": ["en", "zh"]}},
            }
            result = run_pretraining(f"tiny-{settings.family}", overrides)
            log(f"trained {result.global_step} steps, {result.tokens_seen:,d} tokens")

        with steps.step("reload", "Reloading a snapshot with AutoModelForCausalLM.from_pretrained(repo, revision=...) "
                                  "in a fresh process"):
            from .hub.snapshots import list_snapshots

            snapshots = list_snapshots(repo_id, endpoint=endpoint, token=token, exact_tokens=True)
            if not snapshots:
                raise RuntimeError(f"no snapshot branches were published to {repo_id}")
            for snapshot in snapshots:
                log(f"  {snapshot.branch:28s} step {snapshot.step:>5d}  {snapshot.tokens:>12,d} tokens")
            chosen = snapshots[len(snapshots) // 2]
            ids = tokenizer(PROMPTS["en"], add_special_tokens=False)["input_ids"]
            reloaded = _reload_in_fresh_process(repo_id, chosen.branch, endpoint, token, ids,
                                                output / "reloaded_logits.pt")
            local = AutoModelForCausalLM.from_pretrained(run_dir / f"checkpoint-{chosen.step}").eval()
            with torch.no_grad():
                expected = local(torch.tensor([ids])).logits
            reload_diff = float((reloaded["logits"] - expected).abs().max())
            log(f"revision {chosen.branch} loaded as {reloaded['class']}; max |logit diff| vs the local checkpoint "
                f"{reload_diff:.1e}")
            if reload_diff > 1e-5:
                raise RuntimeError(f"the published snapshot {chosen.branch} does not match its local checkpoint "
                                   f"(max |logit diff| {reload_diff:.2e})")

        final_dir = result.final_checkpoint
        tokenizer = AutoTokenizer.from_pretrained(final_dir)
        final = AutoModelForCausalLM.from_pretrained(final_dir).eval()
        with steps.step("generate", "Generating English and Chinese text with the final model"):
            generations = {lang: _generate(final, tokenizer, prompt, settings.new_tokens, settings.seed)
                           for lang, prompt in PROMPTS.items()}
            for lang, text in generations.items():
                log(f"  [{lang}] {text!r}")

        with steps.step("perplexity", "Domain perplexity (Skywork's method) of the first snapshot and the final model"):
            first = AutoModelForCausalLM.from_pretrained(run_dir / f"checkpoint-{snapshots[0].step}").eval()
            table, table_path = _domain_perplexity({f"step {snapshots[0].step}": first,
                                                    f"final (step {result.global_step})": final},
                                                   tokenizer, output, settings.progress)
            log(table)

        with steps.step("plot", "Drawing the training and validation curves"):
            curves = plot_run_curves(result.metrics_path, output / "learning_curves.png",
                                     title=f"tiny {settings.family}, {result.tokens_seen:,d} tokens")
            log(f"wrote {curves}")

        with steps.step("card", "The model card published on main"):
            from huggingface_hub import hf_hub_download

            card_path = hf_hub_download(repo_id, "README.md", revision="main", endpoint=endpoint, token=token,
                                        cache_dir=output / "hf-cache")
            card_text = Path(card_path).read_text(encoding="utf-8")
            shutil.copyfile(card_path, output / "MODEL_CARD.md")
            body = card_text.split("---", 2)[-1].strip().splitlines()
            log("\n".join(f"  {line}" for line in body[:14]) + f"\n  ... ({len(card_text.splitlines())} lines, copied "
                f"to {output / 'MODEL_CARD.md'})")

    return DemoSummary(output_dir=output, tokenizer_dir=tokenizer_dir, run_dir=run_dir, final_checkpoint=final_dir,
                       repo_id=repo_id, endpoint=endpoint,
                       snapshots=[(s.branch, s.step, s.tokens) for s in snapshots],
                       reloaded_revision=chosen.branch, reload_max_logit_diff=reload_diff, generations=generations,
                       perplexity_table=table, perplexity_json=table_path, curves_png=curves, seconds=steps.seconds)


__all__ = ["DemoSettings", "DemoSummary", "run_demo"]
