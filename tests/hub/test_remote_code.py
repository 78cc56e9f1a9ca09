"""The published repo loads without hf_smallllm (remote code), and with it installed uses the package's classes."""

import json
from pathlib import Path

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

    from hf_smallllm.convert.remote_code import add_remote_code

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


# Each file of a saved folder imported from its own copy of the folder (a fresh package each time), so a file
# passes only if it imports with nothing but its own sibling imports, torch, transformers and the standard library.
IMPORT_EACH_ALONE = """
import importlib, json, shutil, sys
from pathlib import Path
folders, root = FOLDERS, Path(ROOT)
sys.path.insert(0, str(root))
done = []
for index, (folder, name) in enumerate((f, p.stem) for f in folders for p in sorted(Path(f).glob("*.py"))):
    package = root / f"alone{index}"
    shutil.copytree(folder, package)
    (package / "__init__.py").write_text("")
    importlib.import_module(f"alone{index}.{name}")
    done.append(name)
hooks = [finder for finder in sys.meta_path if getattr(finder, "smallllm_peft_hook", False)]
print("RESULT " + json.dumps({"imported": sorted(set(done)), "peft_hooks": len(hooks)}))
"""


def test_every_shipped_file_imports_alone_without_the_package(tmp_path):
    """What a saved folder ships: the files its classes import, none of them a conversion table, each one importable
    on its own where hf_smallllm cannot be imported, and none with a side effect on import."""
    import os
    import subprocess
    import sys

    from hf_smallllm.families import FAMILIES

    folders = {name: make_checkpoint(tmp_path / name, 1, family=name) for name in FAMILIES}
    shipped = {name: sorted(p.name for p in folder.glob("*.py")) for name, folder in folders.items()}
    for name, files in shipped.items():
        assert f"configuration_{name}.py" in files and f"modeling_{name}.py" in files
        assert not any(f.startswith(("configuration_", "modeling_")) and f.split("_", 1)[1] not in (
            f"{name}.py", "smallllm.py") for f in files), files  # no other family's classes
        assert "layouts.py" not in files and "remote_code.py" not in files
        for file in files:  # the tensor tables and the lit-gpt/GLM layouts stay in the package
            text = (folders[name] / file).read_text()
            assert "TensorRule" not in text and "transformer.h.{layer}" not in text, file
    code = BLOCK_HF_SMALLLLM + f"FOLDERS, ROOT = {[str(f) for f in folders.values()]!r}, {str(tmp_path / 'alone')!r}\n"
    (tmp_path / "alone").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    completed = subprocess.run([sys.executable, "-c", code + IMPORT_EACH_ALONE], env=env, capture_output=True,
                               text=True, timeout=240, cwd=tmp_path)
    result = _result(completed)
    assert result["imported"] == sorted({Path(f).stem for files in shipped.values() for f in files})
    assert result["peft_hooks"] == 0  # importing a model file installs nothing; building a model does (PEFT)
