"""The published repo loads without hf_smallllm (remote code), and with it installed uses the package's classes."""

import json

import pytest
import torch

from hf_smallllm.hub import HubPublisher

from .conftest import make_checkpoint, run_python

BLOCK_HF_SMALLLLM = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "hf_smallllm" or name.startswith("hf_smallllm."):
            raise ImportError("hf_smallllm is blocked in this test")
sys.meta_path.insert(0, _Block())
try:
    import hf_smallllm
    raise SystemExit("hf_smallllm was importable")
except ImportError:
    pass
"""

LOAD_AND_RUN = """
import json, sys, torch
from transformers import AutoModelForCausalLM
repo, revision, trust = REPO, REVISION, TRUST
model = AutoModelForCausalLM.from_pretrained(repo, revision=revision, trust_remote_code=trust)
ids = torch.tensor([[5, 17, 99, 3, 250, 42]])
with torch.no_grad():
    logits = model(ids).logits
print("RESULT " + json.dumps({"module": type(model).__module__, "logits": logits[0, -1, :8].tolist()}))
"""


def _result(completed):
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = [out for out in completed.stdout.splitlines() if out.startswith("RESULT ")][-1]
    return json.loads(line[7:])


@pytest.mark.slow
@pytest.mark.parametrize("family", ["btlm"])
def test_remote_code_without_the_package_and_local_classes_with_it(hub, hub_env, tmp_path, family):
    endpoint, token = hub
    repo = f"tests/remote-code-{family}"
    folder = make_checkpoint(tmp_path / "checkpoint-7", 7, family=family)
    publisher = HubPublisher(repo, endpoint=endpoint, token=token)
    branch = publisher.publish_snapshot(folder).revision

    from hf_smallllm.families import FAMILIES

    model = FAMILIES[family].causal_lm_class.from_pretrained(folder)
    with torch.no_grad():
        expected = model(torch.tensor([[5, 17, 99, 3, 250, 42]])).logits[0, -1, :8]

    settings = f"REPO, REVISION = {repo!r}, {branch!r}\n"
    remote = _result(run_python(BLOCK_HF_SMALLLLM + settings + "TRUST = True\n" + LOAD_AND_RUN, hub_env))
    assert remote["module"].startswith("transformers_modules.")  # the repo's own files, not hf_smallllm
    torch.testing.assert_close(torch.tensor(remote["logits"]), expected, rtol=1e-5, atol=1e-5)

    # With hf_smallllm installed and trust_remote_code left unset, the registered local classes load the repo.
    local = _result(run_python("import hf_smallllm\n" + settings + "TRUST = None\n" + LOAD_AND_RUN, hub_env))
    assert local["module"] == f"hf_smallllm.models.modeling_{family}"
    torch.testing.assert_close(torch.tensor(local["logits"]), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", sorted(__import__("hf_smallllm.families", fromlist=["FAMILIES"]).FAMILIES))
def test_every_family_packages_its_files_and_auto_map(family, tmp_path):
    import ast

    from hf_smallllm.models.remote_code import add_remote_code

    folder = make_checkpoint(tmp_path / "checkpoint-1", 1, family=family)
    copied = set(add_remote_code(folder))
    config = json.loads((folder / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM"}
    for reference in config["auto_map"].values():
        module, name = reference.split(".")
        assert f"{module}.py" in copied
        assert name in (folder / f"{module}.py").read_text()
    for file in copied:  # shipped files import only torch/transformers/stdlib and each other
        for node in ast.walk(ast.parse((folder / file).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert f"{node.module}.py" in copied, (file, node.module)
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                assert not any(n.startswith("hf_smallllm") for n in names), (file, names)
