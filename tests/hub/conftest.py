"""Fixtures for the Hub tests: a local Hub-protocol server on 127.0.0.1 and a finished tiny training run.

The server is `hf_smallllm.testing.hub_server`, in-process on a free port. `huggingface_hub` was imported in offline
mode by the suite's conftest (nothing may reach the real Hub), so the fixture lifts offline mode only for the
client's calls to this local server; HfApi and snapshot_download take the endpoint explicitly. Code paths that read
`HF_ENDPOINT` at import (transformers' `from_pretrained(repo, revision=...)`) run in subprocesses (`hub_env`).
"""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hf_smallllm.families import preset_config
from hf_smallllm.runfiles import append_metrics
from hf_smallllm.testing.hub_server import DEFAULT_TOKEN, start_in_thread

FAMILY = "tinyllama"
STEPS = (10, 20, 30)
TOKENS_PER_STEP = 4096


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory):
    server = start_in_thread(tmp_path_factory.mktemp("hub-root"))
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def hub(hub_server, monkeypatch):
    """(endpoint, token) of the local server. For this test only, huggingface_hub leaves offline mode and its default
    endpoint points at the local server too, so even a call that forgot `endpoint=` cannot reach the real Hub."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", hub_server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub_server.url + "/{repo_id}/resolve/{revision}/{filename}")
    return hub_server.url, DEFAULT_TOKEN


@pytest.fixture
def hub_env(hub_server, tmp_path):
    """Environment for a subprocess that talks to the local server through HF_ENDPOINT, with a clean HF_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=hub_server.url, HF_TOKEN=DEFAULT_TOKEN, HF_HOME=str(tmp_path / "hf-home"),
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="0", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(Path(__file__).parents[2]))
    return env


def make_checkpoint(folder: Path, step: int, tokenizer=None, family: str = FAMILY) -> Path:
    """A checkpoint as the pretraining convention writes it: save_pretrained + trainer_state.json + resume-only
    files (which publishing must leave out)."""
    from hf_smallllm.families import FAMILIES

    torch.manual_seed(step)
    model = FAMILIES[family].causal_lm_class(preset_config(family, "tiny"))
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    (folder / "trainer_state.json").write_text(json.dumps(
        {"global_step": step, "num_input_tokens_seen": step * TOKENS_PER_STEP, "log_history": []}))
    torch.save({"state": {}}, folder / "optimizer.pt")
    (folder / "data_state.json").write_text("{}")
    return folder


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, corpus_tokenizer):
    """A finished tiny run: three checkpoints, metrics with per-domain eval, and its recipe."""
    root = tmp_path_factory.mktemp("run")
    for step in STEPS:
        make_checkpoint(root / f"checkpoint-{step}", step, corpus_tokenizer)
    for step in STEPS:
        append_metrics(root / "metrics.jsonl",
                       {"step": step, "tokens": step * TOKENS_PER_STEP, "loss": 5.0 - step / 10})
        append_metrics(root / "metrics.jsonl", {"step": step, "tokens": step * TOKENS_PER_STEP,
                                                "eval/kjv/loss": 4.0 - step / 20, "eval/kjv/ppl": 55.0 - step,
                                                "eval/zh_poetry/loss": 5.5 - step / 30})
    recipe = {"model": {"family": FAMILY, "preset": "tiny"},
              "data": {"sources": [{"name": "kjv", "paths": ["bundled:en_kjv.txt"]},
                                   {"name": "zh_poetry", "paths": ["bundled:zh_poetry.jsonl"]}],
                       "mixture": [{"until": 1.0, "weights": {"kjv": 0.6, "zh_poetry": 0.4}}],
                       "seq_len": 128, "tokens_per_step": TOKENS_PER_STEP, "packing": "document"},
              "training": {"max_steps": 30}}
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return root


def run_python(code: str, env: dict, timeout: int = 240):
    import subprocess

    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
