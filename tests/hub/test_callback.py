"""Snapshots published in the background during a real transformers.Trainer run, and the recipe section."""

import pytest
import torch
from huggingface_hub import HfApi
from transformers import Trainer, TrainingArguments

from hf_smallllm.families import FAMILIES, preset_config
from hf_smallllm.hub import HubPublishCallback, list_snapshots
from hf_smallllm.hub.publish import HubPublisher
from hf_smallllm.hub.recipe import build_publish_callbacks
from hf_smallllm.train.extensions import RunContext, build_section_callbacks


class TokenRows(torch.utils.data.Dataset):
    def __init__(self, tokenizer, rows=16, length=32):
        from hf_smallllm.resources import corpus_path

        ids = tokenizer(corpus_path("en_kjv.txt").read_text(encoding="utf-8")[:20_000])["input_ids"]
        self.rows = [torch.tensor(ids[i * length:(i + 1) * length]) for i in range(rows)]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return {"input_ids": self.rows[i], "labels": self.rows[i]}


def test_trainer_publishes_snapshots_in_the_background(hub, tmp_path, corpus_tokenizer):
    endpoint, token = hub
    repo = "tests/trainer-run"
    lines = []
    config = preset_config("tinyllama", "tiny", vocab_size=len(corpus_tokenizer))
    model = FAMILIES["tinyllama"].causal_lm_class(config)
    callback = HubPublishCallback(repo, endpoint=endpoint, token=token, every_steps=2, tags={4: "halfway"},
                                  log=lines.append, card_options={"license": "apache-2.0"})
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=6, save_steps=2, per_device_train_batch_size=4,
                             learning_rate=1e-3, logging_steps=2, report_to=[], use_cpu=True,
                             include_num_input_tokens_seen=True, save_only_model=False, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=TokenRows(corpus_tokenizer),
                      processing_class=corpus_tokenizer, callbacks=[callback])
    trainer.train()

    assert not callback.failures, callback.failures
    snapshots = list_snapshots(repo, endpoint=endpoint, token=token, exact_tokens=True)
    assert [s.step for s in snapshots] == [2, 4, 6]
    assert [s.tokens for s in snapshots] == [2 * 4 * 32, 4 * 4 * 32, 6 * 4 * 32]
    assert sum("published (step" in line for line in lines) == 4  # one line per revision: 3 branches + main
    api = HfApi(endpoint=endpoint, token=token)
    assert [t.name for t in api.list_repo_refs(repo).tags] == ["halfway"]
    main_files = set(api.list_repo_files(repo))
    assert {"README.md", "revisions.txt", "model.safetensors", "tokenizer.json"} <= main_files
    published = set(api.list_repo_files(repo, revision=snapshots[0].branch))
    assert not {"optimizer.pt", "scheduler.pt", "training_args.bin"} & published


def test_failed_uploads_are_retried_then_reported(hub, tmp_path, monkeypatch):
    from .conftest import make_checkpoint

    endpoint, token = hub
    make_checkpoint(tmp_path / "checkpoint-1", 1)
    make_checkpoint(tmp_path / "checkpoint-2", 2)
    real = HubPublisher.publish_snapshot
    attempts = {1: 0, 2: 0}

    def flaky(self, folder, tag=None):
        step = int(folder.name.split("-")[1])
        attempts[step] += 1
        if step == 1 and attempts[1] < 3 or step == 2:
            raise ConnectionError("hub unreachable")
        return real(self, folder, tag)

    monkeypatch.setattr(HubPublisher, "publish_snapshot", flaky)
    lines = []
    callback = HubPublishCallback("tests/retries", endpoint=endpoint, token=token, retries=2, backoff_s=0.01,
                                  final=False, log=lines.append, output_dir=tmp_path)

    class State:
        is_world_process_zero, num_input_tokens_seen = True, 0

    for step in (1, 2):
        state = State()
        state.global_step = step
        callback.on_save(None, state, None)
    assert callback.wait(30)
    callback.on_train_end(None, state, None)
    assert attempts == {1: 3, 2: 3}
    assert [r.revision for r in callback.results] == ["step1-tokens0.0000041B"]
    assert callback.failures == [(2, "ConnectionError: hub unreachable")]
    assert any("retrying in 0.01s" in line for line in lines)
    assert any("snapshot step 2 NOT published" in line for line in lines)


def test_recipe_section_builds_the_callback(tmp_path):
    recipe = {"publish": {"repo_id": "me/run", "every_steps": 50, "tags": {100: "v1"}, "branch_template": "tinyllama",
                          "card": {"license": "mit"}}}
    context = RunContext(output_dir=tmp_path, recipe=recipe, family="tinyllama")
    [callback] = build_section_callbacks(recipe, context)
    assert isinstance(callback, HubPublishCallback)
    assert callback.wants(100) and not callback.wants(75)
    assert callback.publisher.template.template == "step-{step_k}k-token-{tokens}B"
    assert callback.card_options["license"] == "mit" and callback.card_options["metrics"] == tmp_path / "metrics.jsonl"
    assert build_publish_callbacks(recipe["publish"], RunContext(tmp_path, recipe, "tinyllama",
                                                                 is_main_process=False)) == []
    with pytest.raises(ValueError, match="do not put a Hub token in a recipe"):
        build_publish_callbacks({"repo_id": "me/run", "token": "hf_x"}, context)
    with pytest.raises(ValueError, match=r"unknown publish option\(s\) \['evry_steps'\]"):
        build_publish_callbacks({"repo_id": "me/run", "evry_steps": 5}, context)
    with pytest.raises(ValueError, match="needs repo_id"):
        build_publish_callbacks({"every_steps": 5}, context)


def test_recipe_publish_section_in_a_pretraining_run(hub, tmp_path, corpus_tokenizer, monkeypatch):
    """`publish:` in a recipe, run by the pretraining engine: snapshots every 3 steps, final model on main."""
    from hf_smallllm.train.api import run_pretraining

    endpoint, token = hub
    monkeypatch.setenv("HF_TOKEN", token)  # tokens never go in recipes
    corpus_tokenizer.save_pretrained(tmp_path / "tokenizer")
    recipe = {
        "model": {"family": "tinyllama", "preset": "tiny"},
        "tokenizer": str(tmp_path / "tokenizer"),
        "data": {"sources": [{"name": "kjv", "paths": ["bundled:en_kjv.txt"], "split_by": "line"}],
                 "seq_len": 64, "tokens_per_step": 256},
        "schedule": {"type": "constant", "warmup_steps": 0},
        "training": {"output_dir": str(tmp_path / "run"), "max_steps": 6, "save_steps": 3, "logging_steps": 3,
                     "tensorboard": False, "progress_bar": False},
        "publish": {"repo_id": "tests/accelerate-run", "endpoint": endpoint, "every_steps": 3, "retries": 1},
    }
    result = run_pretraining(recipe)
    assert result.global_step == 6
    snapshots = list_snapshots("tests/accelerate-run", endpoint=endpoint, token=token, exact_tokens=True)
    assert [(s.step, s.tokens) for s in snapshots] == [(3, 3 * 256), (6, 6 * 256)]
    card = HfApi(endpoint=endpoint, token=token).hf_hub_download("tests/accelerate-run", "README.md",
                                                               cache_dir=tmp_path / "cache")
    text = open(card, encoding="utf-8").read()
    assert "1,536 tokens) in 6 optimizer steps" in text and "| kjv |" in text
