"""The family records are the only home of per-family facts: every record is complete and resolvable, a new family
file is found without editing anything else, and no other module keeps a table keyed by family name."""

import ast
import dataclasses
import sys
from pathlib import Path

import pytest

import hf_smallllm.families as families
from hf_smallllm.convert.formats import OFFICIAL_FORMATS, PUBLISHED_LAYOUTS
from hf_smallllm.families import FAMILIES, FAMILY_NAMES, Family, family_of, get_family, preset_config
from hf_smallllm.hub.model_card import TEMPLATES
from hf_smallllm.hub.revisions import BRANCH_TEMPLATES, BranchTemplate
from hf_smallllm.sft.templates import CHAT_FORMATS, FAMILY_CHAT_FORMATS
from hf_smallllm.tokenization.presets import TOKENIZER_PRESETS, TokenizerPreset

REPO = Path(__file__).resolve().parents[2]
OPTIONAL_FIELDS = {"branch_template", "snapshot_subfolder_template", "milestone_repos"}


def test_the_five_families_in_their_listed_order():
    # a family added later is listed after these (tests/families/test_battery.py adds one)
    assert FAMILY_NAMES[:5] == ("tinyllama", "geb", "chuxin", "btlm", "skywork")


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_every_record_has_every_field(name):
    family = FAMILIES[name]
    for item in dataclasses.fields(Family):
        if item.name not in OPTIONAL_FIELDS:
            assert getattr(family, item.name), f"{name}.{item.name} is empty"
    assert family.config_class.model_type == f"smallllm_{name}"
    assert family.model_class.config_class is family.config_class
    assert family.causal_lm_class.config_class is family.config_class
    assert {"published", "tiny", "small"} <= set(family.presets)
    assert family_of(preset_config(name, "tiny")) == name
    assert family.official.layout in PUBLISHED_LAYOUTS
    assert isinstance(TokenizerPreset(**family.tokenizer), TokenizerPreset)
    assert family.chat_format in CHAT_FORMATS
    assert (TEMPLATES / family.model_card).is_file()
    assert family.citation.arxiv in family.citation.bibtex and family.citation.bibtex.startswith("@")
    if family.branch_template:
        BranchTemplate(family.branch_template)  # a valid template


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_upper_layers_read_the_record(name):
    family = FAMILIES[name]
    assert TOKENIZER_PRESETS[name] == TokenizerPreset(**family.tokenizer)
    assert FAMILY_CHAT_FORMATS[name] == family.chat_format
    assert OFFICIAL_FORMATS[name].layout is PUBLISHED_LAYOUTS[family.official.layout]
    assert OFFICIAL_FORMATS[name].config_json_ids_trusted == family.official.config_json_ids_trusted
    assert BRANCH_TEMPLATES.get(name) == family.branch_template


def test_unknown_family_and_preset_name_the_choices():
    with pytest.raises(ValueError, match="unknown family 'llama3'; choose one of tinyllama, geb"):
        get_family("llama3")
    with pytest.raises(ValueError, match="unknown preset 'huge' for btlm; choose one of published, tiny, small"):
        preset_config("btlm", "huge")


SIXTH = '''
from hf_smallllm.families import TINY, Citation, Family, OfficialFormat

FAMILY = Family(
    name="zeta", title="Zeta", config_class_name="TinyLlamaConfig", model_class_name="TinyLlamaModel",
    causal_lm_class_name="TinyLlamaForCausalLM", presets={"published": {}, "tiny": dict(TINY)},
    official=OfficialFormat(layout="llama"), tokenizer={}, chat_format="generic", model_card="tinyllama.md",
    citation=Citation("0000.00000", "@misc{zeta, eprint = {0000.00000}}"),
)
'''


def test_a_sixth_family_is_one_new_file(tmp_path, monkeypatch):
    (tmp_path / "zeta.py").write_text(SIXTH)
    monkeypatch.setattr(families, "__path__", [*families.__path__, str(tmp_path)])
    try:
        found = families._discover()
    finally:
        sys.modules.pop("hf_smallllm.families.zeta", None)
    assert tuple(found) == (*FAMILY_NAMES, "zeta")
    assert found["zeta"].preset("tiny").hidden_size == 64


def _family_keyed_tables(path: Path) -> list[str]:
    """Dict displays keyed by, and list/tuple/set displays of, every family name."""
    names = set(FAMILY_NAMES)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Dict):
            items = node.keys
        elif isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = node.elts
        else:
            continue
        strings = {item.value for item in items if isinstance(item, ast.Constant) and isinstance(item.value, str)}
        if names <= strings:
            found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_no_other_module_keys_a_table_by_family_name():
    """Adding a family must not mean editing a table somewhere else: the only list of all five names is the
    listing order in `families/__init__.py`."""
    allowed = {REPO / "hf_smallllm" / "families" / "__init__.py"}
    roots = [REPO / "hf_smallllm", REPO / "training", REPO / "conversion", REPO / "benchmarks"]
    offenders = [hit for root in roots for path in sorted(root.rglob("*.py")) if path not in allowed
                 for hit in _family_keyed_tables(path)]
    assert offenders == []
