"""Per-domain validation during training: a real short `run_pretraining` run with a `domain_eval:` recipe section,
through the pretraining engine, logs every domain separately to the metrics file and the log history and plots them."""

import json
import math

import pytest

from hf_smallllm.eval.documents import default_domains
from hf_smallllm.eval.domain_validation import DomainEvalCallback, DomainValidator
from hf_smallllm.eval.recipe import build_domain_eval_callbacks, resolve_section
from hf_smallllm.runfiles import read_metrics
from hf_smallllm.train.extensions import RunContext

DOMAIN_EVAL = {"every_steps": 2, "max_documents": 2, "max_chars": 300, "batch_size": 2}


def pretraining_recipe(tokenizer_dir, output_dir, domain_eval) -> dict:
    """Two-layer TinyLlama, 64-token rows, 4 steps of 128 tokens on KJV and Shakespeare."""
    return {
        "model": {"family": "tinyllama", "preset": "tiny"},
        "tokenizer": str(tokenizer_dir),
        "data": {
            "sources": [
                {"name": "kjv", "paths": ["bundled:en_kjv.txt"], "split_by": "line", "weight": 0.5},
                {"name": "shakespeare", "paths": ["bundled:en_shakespeare.txt"], "split_by": "heading",
                 "weight": 0.5},
            ],
            "seq_len": 64,
            "tokens_per_step": 128,
        },
        "optimizer": {"lr": 3e-3},
        "schedule": {"type": "cosine", "warmup_steps": 1},
        "training": {"output_dir": str(output_dir), "max_steps": 4, "save_steps": 4, "logging_steps": 1,
                     "tensorboard": False, "progress_bar": False},
        "domain_eval": domain_eval,
    }


@pytest.fixture(scope="module")
def tokenizer_dir(corpus_tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval-tokenizer")
    corpus_tokenizer.save_pretrained(folder)
    return folder


def test_run_pretraining_logs_every_domain(tokenizer_dir, tmp_path):
    from hf_smallllm.train import run_pretraining

    result = run_pretraining(pretraining_recipe(tokenizer_dir, tmp_path / "run", DOMAIN_EVAL))
    domains = [d.name for d in default_domains()]
    assert len(domains) == 5
    records = [r for r in read_metrics(result.metrics_path) if any(k.startswith("eval/") for k in r)]
    # At the start, every 2 steps, and (already done at step 4) not again at the end.
    assert [r["step"] for r in records] == [0, 2, 4]
    assert [r["tokens"] for r in records] == [0, 256, 512]
    for record in records:
        for domain in domains:
            loss, ppl = record[f"eval/{domain}/loss"], record[f"eval/{domain}/ppl"]
            assert math.isfinite(loss) and loss > 0
            assert ppl == pytest.approx(math.exp(loss))
    # Training moved the model: every domain's loss changed, and they differ from each other.
    assert all(records[0][f"eval/{d}/loss"] != records[-1][f"eval/{d}/loss"] for d in domains)
    assert len({round(records[-1][f"eval/{d}/loss"], 4) for d in domains}) == len(domains)
    # Trained on English text: the English domains improve from the untrained start.
    assert records[-1]["eval/en_kjv/loss"] < records[0]["eval/en_kjv/loss"]
    plot = result.output_dir / "domain_eval.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_section_builds_one_callback_on_named_files(tmp_path, corpus_tokenizer):
    code = tmp_path / "code.jsonl"
    code.write_text("\n".join(json.dumps({"body": f"def f{i}(x):\n    return x * {i}\n"}) for i in range(3)))
    prose = tmp_path / "prose.txt"
    prose.write_text("In the beginning was the word.\nAnd the word was with God.\n" * 5)
    context = RunContext(output_dir=tmp_path / "run", recipe={}, family="tinyllama", tokenizer=corpus_tokenizer)
    [callback] = build_domain_eval_callbacks(
        {"domains": {"code": str(code), "prose": str(prose)}, "text_field": "body", "plot": None}, context)
    assert isinstance(callback, DomainEvalCallback)
    assert callback.validator.domains == ["code", "prose"]
    assert callback.metrics_path == tmp_path / "run" / "metrics.jsonl"
    assert callback.plot_path is None and callback.tokenizer is corpus_tokenizer
    assert len(callback.validator.documents["code"]) == 3


@pytest.mark.parametrize("section, message", [
    ({"every_step": 3}, "unknown key"),
    ({"every_steps": 0}, "domain_eval.every_steps"),
    ({"max_documents": -1}, "domain_eval.max_documents"),
    ("yes", "expected a mapping"),
])
def test_bad_section_is_named(section, message):
    with pytest.raises(ValueError, match=message):
        resolve_section(section)


def test_missing_domain_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        DomainValidator({"web": str(tmp_path / "nowhere.txt")})
