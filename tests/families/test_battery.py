"""Every family passes the shared battery (`battery.py`), and so does a sixth one added from its own files only: a
Llama-shaped variant with another norm epsilon and vocabulary, written into a temporary copy of the package as two
files (its record in `families/`, its config and model classes in `models/`). Nothing else (export lists, the CLI's
choices, tables keyed by family name) is edited for it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hf_smallllm.families import FAMILY_NAMES

from .battery import BATTERY

REPO = Path(__file__).resolve().parents[2]

# The family's shipped model file: its config class (published defaults) and thin model classes.
ZETA_MODEL = '''
"""Zeta: a Llama-shaped variant (a test family): RMSNorm 1e-6 and a 49,152-entry vocabulary."""

from transformers.generation import GenerationMixin

from .configuration_smallllm import SmallLLMConfig
from .modeling_smallllm import SmallLLMForCausalLM, SmallLLMModel, SmallLLMPreTrainedModel


class ZetaConfig(SmallLLMConfig):
    model_type = "smallllm_zeta"

    vocab_size: int = 49152
    norm_eps: float = 1e-6


class ZetaPreTrainedModel(SmallLLMPreTrainedModel):
    config: ZetaConfig


class ZetaModel(ZetaPreTrainedModel, SmallLLMModel):
    pass


class ZetaForCausalLM(ZetaPreTrainedModel, SmallLLMForCausalLM, GenerationMixin):
    base_model_class = ZetaModel


__all__ = ["ZetaConfig", "ZetaForCausalLM", "ZetaModel", "ZetaPreTrainedModel"]
'''

# The family's record.
ZETA_RECORD = '''
from hf_smallllm.families import SMALL, TINY, Citation, Family, OfficialFormat

FAMILY = Family(
    name="zeta", title="Zeta", config_class_name="ZetaConfig", model_class_name="ZetaModel",
    causal_lm_class_name="ZetaForCausalLM",
    presets={"published": {}, "tiny": dict(TINY), "small": dict(SMALL)},
    official=OfficialFormat(layout="llama"),
    tokenizer=dict(kind="byte_level", pre_tokenizer="gpt2", vocab_size=49_152),
    chat_format="generic", model_card="smallllm.md",
    citation=Citation("0000.00000", "@misc{zeta, eprint = {0000.00000}}"),
)
'''

# In a process whose hf_smallllm is the temporary copy: the battery on the new family, and where it shows up.
RUN = """
import json, sys
sys.path.insert(0, FAMILIES_TESTS)
import hf_smallllm
from hf_smallllm.families import FAMILIES, get_family
from hf_smallllm_cli._options import FAMILY_NAMES as CLI_FAMILIES
import battery
zeta = get_family("zeta")
config = zeta.preset("published")
result = {"package": hf_smallllm.__file__, "families": list(FAMILIES), "cli": list(CLI_FAMILIES),
          "exported": hf_smallllm.ZetaForCausalLM is zeta.causal_lm_class,
          "checks": battery.run_battery("zeta"),
          "published": [config.vocab_size, config.norm_eps, config.hidden_size],
          "tiny": [zeta.preset("tiny").norm_eps, zeta.preset("tiny").vocab_size]}
print("RESULT " + json.dumps(result))
"""


@pytest.mark.parametrize("check", BATTERY, ids=lambda check: check.__name__.removeprefix("check_"))
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_family_passes_the_battery(family, check):
    check(family)


@pytest.mark.slow
def test_a_sixth_family_is_its_own_files_and_passes_the_battery(tmp_path):
    """A temporary copy of the package plus the family's two files (record, model file): the registry lists it after
    the five, the CLI offers it, the package exports its classes, and it passes the battery."""
    package = tmp_path / "site" / "hf_smallllm"
    shutil.copytree(REPO / "hf_smallllm", package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "models" / "modeling_zeta.py").write_text(ZETA_MODEL)
    (package / "families" / "zeta.py").write_text(ZETA_RECORD)
    settings = f"FAMILIES_TESTS = {str(Path(__file__).parent)!r}\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO)])}
    completed = subprocess.run([sys.executable, "-c", settings + RUN], env=env, capture_output=True, text=True,
                               timeout=300, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads([line for line in completed.stdout.splitlines() if line.startswith("RESULT ")][-1][7:])
    assert result["package"].startswith(str(package))
    assert result["families"] == result["cli"] == [*FAMILY_NAMES, "zeta"]
    assert result["exported"]
    assert result["checks"] == [check.__name__ for check in BATTERY]
    assert result["published"] == [49152, 1e-6, 2048]  # what differs, and a default it shares with the core
    assert result["tiny"] == [1e-6, 256]
