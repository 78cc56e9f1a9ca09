"""The official Hub repositories load natively through the Auto classes with the package imported.

A local Hub-protocol server holds repositories laid out file by file like `cerebras/btlm-3b-8k-base` (one
`pytorch_model.bin`), `Skywork/Skywork-13B-base` (sharded `.bin` with an index) and `GEB-AGI/geb-1.3b` (sharded
safetensors with an index), each with its `auto_map`, remote-code files, tokenizer files and generation config, and
tiny random weights (`hf_smallllm.testing.official_repos`). A subprocess with `HF_ENDPOINT` pointing at the server
loads them with `from_pretrained("org/name", revision=...)` under every `trust_remote_code` setting; the logits must
equal those of the same folder converted by `official_to_package`, and every remote-code file is a tripwire that
writes a marker when run. Intermediate checkpoints are published as TinyLlama (branches) and Skywork (sub-folders)
publish theirs.
"""

import json
import sys

import pytest
import torch

from hf_smallllm.testing.hub_server import DEFAULT_TOKEN
from hf_smallllm.testing.official_repos import (
    OFFICIAL_REPOS,
    TRIPWIRE_ENV,
    train_sentencepiece_model,
    tripwire_fired,
    write_official_repo,
)

WEIGHT_FORMAT = {"btlm": "bin", "skywork": "sharded-bin", "geb": "sharded-safetensors"}
SKYWORK_INTERMEDIATE = "Skywork/Skywork-13B-Base-Intermediate"
SKYWORK_SUBFOLDERS = {"model_hubs/Skywork-13B-Base-0.5T": 1, "model_hubs/Skywork-13B-Base-1T": 2}  # -> seed
TINYLLAMA_INTERMEDIATE = "TinyLlama/tinyLlama-intermediate-checkpoints"
TINYLLAMA_BRANCHES = {"step-10k-token-21B": 1, "step-20k-token-42B": 2}


@pytest.fixture(scope="module")
def official_hub(hub_server, tmp_path_factory):
    """Publish the official-layout repositories to the local server (once for this module)."""
    import huggingface_hub.constants as constants
    from huggingface_hub import HfApi

    from hf_smallllm.convert.converter import package_to_native

    root = tmp_path_factory.mktemp("official")
    sentencepiece_model = train_sentencepiece_model()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        api = HfApi(endpoint=hub_server.url, token=DEFAULT_TOKEN)
        for family, repo in OFFICIAL_REPOS.items():
            folder = write_official_repo(family, root / family, weight_format=WEIGHT_FORMAT[family],
                                         sentencepiece_model=sentencepiece_model)
            api.create_repo(repo, exist_ok=True)
            api.upload_folder(repo_id=repo, folder_path=folder, commit_message="official layout")
        api.create_repo(SKYWORK_INTERMEDIATE, exist_ok=True)
        for subfolder, seed in SKYWORK_SUBFOLDERS.items():
            folder = write_official_repo("skywork", root / f"skywork-{seed}", seed=seed, weight_format="sharded-bin",
                                         sentencepiece_model=sentencepiece_model)
            api.upload_folder(repo_id=SKYWORK_INTERMEDIATE, folder_path=folder, path_in_repo=subfolder)
        api.create_repo(TINYLLAMA_INTERMEDIATE, exist_ok=True)
        api.upload_file(repo_id=TINYLLAMA_INTERMEDIATE, path_or_fileobj=b"# intermediate checkpoints\n",
                        path_in_repo="README.md")
        for branch, seed in TINYLLAMA_BRANCHES.items():
            torch.manual_seed(seed)
            from hf_smallllm import FAMILIES, preset_config

            model = FAMILIES["tinyllama"].causal_lm_class(preset_config("tinyllama", "tiny"))
            model.save_pretrained(root / f"tinyllama-{seed}.package")
            package_to_native(root / f"tinyllama-{seed}.package", root / f"tinyllama-{seed}", verify=False,
                              progress=False)
            api.create_branch(TINYLLAMA_INTERMEDIATE, branch=branch)
            api.upload_folder(repo_id=TINYLLAMA_INTERMEDIATE, folder_path=root / f"tinyllama-{seed}", revision=branch)
    return hub_server.url, root


LOAD = r"""
import json, sys, tempfile, torch
from pathlib import Path
import hf_smallllm
from huggingface_hub import snapshot_download
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from hf_smallllm.convert.converter import official_to_package

repos, skywork_intermediate, subfolders, tinyllama_intermediate, branches = json.loads(sys.argv[1])
work = Path(tempfile.mkdtemp())
ids = torch.tensor([[1, 5, 9, 17, 33, 65, 100, 3, 200, 7]])
out = {}

def converted_logits(folder, name):
    official_to_package(folder, work / name, verify=False, progress=False)
    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(work / name).eval()(ids).logits

for family, repo in repos.items():
    result = out[family] = {"classes": [], "max_diff": 0.0}
    for trust in ("unset", False, True):
        kwargs = {} if trust == "unset" else {"trust_remote_code": trust}
        config = AutoConfig.from_pretrained(repo, revision="main", **kwargs)
        model = AutoModelForCausalLM.from_pretrained(repo, revision="main", **kwargs).eval()
        tokenizer = AutoTokenizer.from_pretrained(repo, revision="main", **kwargs)
        result["classes"].append([type(config).__name__, type(model).__name__, type(tokenizer).__name__])
        with torch.no_grad():
            logits = model(ids).logits
        if family == list(repos)[0] or trust == "unset":
            reference = converted_logits(snapshot_download(repo, revision="main"), f"{family}-{trust}")
        result["max_diff"] = max(result["max_diff"], (logits - reference).abs().max().item())
    result["generation"] = model.generation_config.to_dict()
    result["ids"] = tokenizer("Hello 世界, 12345 <unk>").input_ids
    model.save_pretrained(work / f"{family}-saved")
    result["saved_files"] = sorted(p.name for p in (work / f"{family}-saved").iterdir())
    result["saved_model_type"] = json.loads((work / f"{family}-saved" / "config.json").read_text())["model_type"]

result = out["skywork-intermediate"] = {}
for subfolder in subfolders:
    model = AutoModelForCausalLM.from_pretrained(skywork_intermediate, subfolder=subfolder).eval()
    folder = Path(snapshot_download(skywork_intermediate, allow_patterns=[subfolder + "/*"])) / subfolder
    reference = converted_logits(folder, subfolder.replace("/", "-"))
    with torch.no_grad():
        result[subfolder] = (model(ids).logits - reference).abs().max().item()
result = out["tinyllama-intermediate"] = {}
for branch in branches:
    # stock Llama tensors and config: transformers' own class; the package's TinyLlama class reads them too
    model = AutoModelForCausalLM.from_pretrained(tinyllama_intermediate, revision=branch).eval()
    ours = hf_smallllm.TinyLlamaForCausalLM.from_pretrained(tinyllama_intermediate, revision=branch).eval()
    with torch.no_grad():
        logits = model(ids).logits
        result[branch] = [type(model).__name__, (ours(ids).logits - logits).abs().max().item(),
                          logits[0, -1, :4].tolist()]
out["remote_modules"] = sorted(name for name in sys.modules if name.startswith("transformers_modules"))
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def loaded(official_hub, tmp_path_factory):
    import os

    url, _ = official_hub
    home = tmp_path_factory.mktemp("hf-home")
    marker = home / "tripwire"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=url, HF_TOKEN=DEFAULT_TOKEN, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_OFFLINE="0", TOKENIZERS_PARALLELISM="false", **{TRIPWIRE_ENV: str(marker)})
    argument = json.dumps([OFFICIAL_REPOS, SKYWORK_INTERMEDIATE, list(SKYWORK_SUBFOLDERS), TINYLLAMA_INTERMEDIATE,
                           list(TINYLLAMA_BRANCHES)])
    import subprocess

    completed = subprocess.run([sys.executable, "-c", LOAD, argument], env=env, capture_output=True, text=True,
                               timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    line = [out for out in completed.stdout.splitlines() if out.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):]), marker, completed.stderr


EXPECTED_CLASSES = {
    "btlm": ["BTLMConfig", "BTLMForCausalLM", "GPT2Tokenizer"],
    "skywork": ["SkyworkConfig", "SkyworkForCausalLM", "SkyworkTokenizer"],
    "geb": ["GEBConfig", "GEBForCausalLM", "GEBTokenizer"],
}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(OFFICIAL_REPOS))
def test_official_repo_loads_into_package_classes_under_every_trust_setting(loaded, family):
    results, _, _ = loaded
    assert results[family]["classes"] == [EXPECTED_CLASSES[family]] * 3  # unset, False, True


@pytest.mark.slow
@pytest.mark.parametrize("family", list(OFFICIAL_REPOS))
def test_official_repo_logits_equal_the_converted_folder(loaded, family):
    results, _, _ = loaded
    assert results[family]["max_diff"] <= 1e-6


@pytest.mark.slow
def test_no_repository_code_ran(loaded):
    results, marker, stderr = loaded
    assert tripwire_fired(marker) is None
    assert results["remote_modules"] == []
    assert "the repository's own code (its auto_map) is not run" in stderr  # the notice users see


@pytest.mark.slow
@pytest.mark.parametrize("family", list(OFFICIAL_REPOS))
def test_generation_config_is_carried_over_and_saves_in_package_layout(loaded, family):
    from hf_smallllm.testing.official_repos import GENERATION

    results, _, _ = loaded
    generation = results[family]["generation"]
    for key, value in GENERATION[family].items():
        assert generation[key] == value, key
    assert "generation_config.json" in results[family]["saved_files"]
    assert results[family]["saved_model_type"] == f"smallllm_{family}"


@pytest.mark.slow
def test_sentencepiece_tokenizers_put_their_special_tokens_after_the_vocabulary(loaded):
    results, _, _ = loaded
    assert results["skywork"]["ids"][0] == 1  # Skywork adds BOS
    assert results["geb"]["ids"][0] != 1  # GEB does not
    assert 0 in results["skywork"]["ids"]  # "<unk>" in the text is the special token


@pytest.mark.slow
def test_intermediate_checkpoints_load_with_subfolder_and_revision(loaded):
    results, _, _ = loaded
    assert all(diff <= 1e-6 for diff in results["skywork-intermediate"].values())
    assert len(results["skywork-intermediate"]) == 2
    tinyllama = results["tinyllama-intermediate"]
    assert [name for name, _, _ in tinyllama.values()] == ["LlamaForCausalLM"] * 2
    assert all(diff <= 1e-5 for _, diff, _ in tinyllama.values())
    first, second = (logits for _, _, logits in tinyllama.values())
    assert first != second  # each branch is its own checkpoint


@pytest.mark.slow
def test_snapshots_lists_branches_and_skywork_subfolders(official_hub, hub):
    from hf_smallllm.hub.snapshots import list_snapshots

    endpoint, token = hub
    skywork = list_snapshots(SKYWORK_INTERMEDIATE, endpoint=endpoint, token=token)
    assert [(s.subfolder, s.step, s.tokens) for s in skywork] == [
        ("model_hubs/Skywork-13B-Base-0.5T", None, 500 * 10**9), ("model_hubs/Skywork-13B-Base-1T", None, 10**12)]
    tinyllama = list_snapshots(TINYLLAMA_INTERMEDIATE, endpoint=endpoint, token=token)
    assert [(s.branch, s.step, s.tokens) for s in tinyllama] == [
        ("step-10k-token-21B", 10_000, 21 * 10**9), ("step-20k-token-42B", 20_000, 42 * 10**9)]


@pytest.mark.slow
def test_snapshots_command_prints_subfolder_rows(official_hub, hub, capsys):
    from hf_smallllm_cli import main

    endpoint, token = hub
    assert main(["snapshots", SKYWORK_INTERMEDIATE, "--endpoint", endpoint, "--token", token]) == 0
    printed = capsys.readouterr().out
    assert "main model_hubs/Skywork-13B-Base-0.5T/" in printed and "~500,000,000,000" in printed


def test_tinyllama_milestone_repositories_are_listed_without_network(capsys):
    from hf_smallllm.hub.snapshots import milestone_snapshots
    from hf_smallllm_cli import main

    milestones = milestone_snapshots("tinyllama")
    assert [s.step for s in milestones] == sorted(s.step for s in milestones)
    assert milestones[-1].repo_id == "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T"
    assert milestones[-1].tokens == 3 * 10**12
    assert milestone_snapshots("btlm") == []
    assert main(["snapshots", "--family", "tinyllama"]) == 0
    assert "PY007/TinyLlama-1.1B-intermediate-step-480k-1T" in capsys.readouterr().out
    assert main(["snapshots"]) == 2
    assert "give a Hub repo (owner/name) or --family" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_snapshots_measures_skywork_subfolder_snapshots(official_hub, hub, tmp_path):
    from hf_smallllm.eval.snapshots_eval import evaluate_snapshots

    endpoint, token = hub
    table = evaluate_snapshots(SKYWORK_INTERMEDIATE, tmp_path / "out", domains=None, max_documents=2,
                               max_chars=400, endpoint=endpoint, token=token, cache_dir=str(tmp_path / "cache"),
                               plot=False, progress=False)
    assert [(r.revision, r.step, r.tokens) for r in table.results] == [
        ("model_hubs/Skywork-13B-Base-0.5T", None, 500 * 10**9), ("model_hubs/Skywork-13B-Base-1T", None, 10**12)]
    first, second = (r.metrics["ppl/average"] for r in table.results)
    assert first != second and first > 1  # two different random models, each measured
