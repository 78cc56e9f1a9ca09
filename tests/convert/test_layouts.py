"""The layout tables generate everything a layout needs: on-load weight conversion equal to the converter's tables,
config.json written back as published, every reason a config cannot be written, and no back-edges from `models/`."""

import ast
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hf_smallllm import FAMILIES, preset_config
from hf_smallllm import layouts as tables
from hf_smallllm.convert import InexpressibleConfigError
from hf_smallllm.convert.configs import cleaned, read_llama_named, read_with_config_class, write_config
from hf_smallllm.convert.formats import NATIVE_LAYOUTS, native_model
from hf_smallllm.convert.plan import DERIVED_TENSORS, export_state_dict
from hf_smallllm.models.config_tables_smallllm import CONFIG_TRANSFORMS

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "configs"
PUBLISHED = {"btlm": ("btlm-3b-8k-base.json", tables.BTLM_OFFICIAL, read_with_config_class),
             "skywork": ("skywork-13b-base.json", tables.SKYWORK_OFFICIAL, read_llama_named)}


@pytest.mark.parametrize("table", list(tables.LAYOUTS.values()), ids=list(tables.LAYOUTS))
def test_every_name_in_a_table_resolves(table):
    assert {rule.transform for rule in table.tensors} <= set(tables.TENSOR_TRANSFORMS.values())
    assert {spec.transform for spec in table.config} <= set(CONFIG_TRANSFORMS)
    assert {derived.compute for derived in table.derived} <= set(DERIVED_TENSORS)
    for requirement in table.requires:
        assert requirement.quantity in tables.QUANTITIES or hasattr(preset_config("tinyllama", "tiny"),
                                                                     requirement.quantity)
    assert len({spec.key for spec in table.config}) == len(table.config), "a config key listed twice"


@pytest.mark.parametrize("family", ["btlm", "geb"])
def test_on_load_conversion_equals_the_converter_table(family, tmp_path):
    """`from_pretrained(official folder)` runs the WeightConverters generated from the table; the folder is written by
    the converter's side of the same table, so a table the two sides read differently fails here, bitwise."""
    torch.manual_seed(0)
    config = preset_config(family, "tiny", attention_bias=True) if family == "geb" else preset_config(family, "tiny")
    model = FAMILIES[family].causal_lm_class(config).eval()
    table = tables.LAYOUTS[FAMILIES[family].official.layout]
    state = {k: v for k, v in model.state_dict().items() if not (config.tie_word_embeddings and k == "lm_head.weight")}
    official = export_state_dict(table, config, state)
    assert set(official).isdisjoint(state.keys() - {"lm_head.weight"})  # every name is the layout's
    save_file({k: v.contiguous() for k, v in official.items()}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(write_config(config, table)))
    loaded = FAMILIES[family].causal_lm_class.from_pretrained(tmp_path).eval()
    loaded_state = loaded.state_dict()
    for key, tensor in state.items():
        assert torch.equal(loaded_state[key], tensor), key


@pytest.mark.parametrize("family", list(PUBLISHED))
def test_published_config_reads_and_writes_back_unchanged(family):
    name, table, read = PUBLISHED[family]
    published = json.loads((FIXTURES / name).read_text())
    config = read(cleaned(published), FAMILIES[family].config_class)
    assert config.vocab_size == published["vocab_size"]
    written = write_config(config, table)
    expected = {k: v for k, v in published.items() if k not in ("_name_or_path", "transformers_version")}
    assert written == expected


@pytest.mark.parametrize("family", ["btlm", "geb"])
def test_official_config_round_trips_through_the_config_class(family):
    config = preset_config(family, "tiny", rope_theta=50000.0) if family == "geb" else preset_config(family, "tiny")
    table = tables.LAYOUTS[FAMILIES[family].official.layout]
    reread = read_with_config_class(write_config(config, table), FAMILIES[family].config_class)
    volatile = {"_name_or_path", "transformers_version", "architectures", "dtype"}  # unset dtype is written float32
    assert {k: v for k, v in reread.to_dict().items() if k not in volatile} == {
        k: v for k, v in config.to_dict().items() if k not in volatile}


def test_a_config_the_layout_cannot_store_is_refused_with_every_reason():
    with pytest.raises(InexpressibleConfigError) as caught:
        write_config(preset_config("tinyllama", "tiny"), tables.BTLM_OFFICIAL)
    message = str(caught.value)
    assert message.startswith("the BTLM official layout cannot express this config: ")
    for part in ("position_embedding_type='rope'", "norm_type='rmsnorm'", "tie_word_embeddings=False",
                 "multi_head=False"):
        assert part in message
    with pytest.raises(InexpressibleConfigError, match="rope_layout='interleaved'"):
        write_config(preset_config("geb", "tiny"), tables.LLAMA)


@pytest.mark.parametrize("family,native", [("tinyllama", "LlamaForCausalLM"), ("geb", "GlmForCausalLM")])
def test_native_model_is_the_stock_class_with_our_weights(family, native):
    torch.manual_seed(0)
    model = FAMILIES[family].causal_lm_class(preset_config(family, "tiny")).eval()
    twin = native_model(model)
    assert type(twin).__name__ == native
    ids = torch.randint(3, model.config.vocab_size, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(twin(ids).logits, model(ids).logits, atol=1e-4, rtol=0)
    assert set(NATIVE_LAYOUTS) == {"llama", "glm"}


# the bottom layer (tests/test_layers.py), importable by every package
BOTTOM = {"errors", "runfiles"}


def _hf_smallllm_imports(path: Path) -> list[str]:
    """Modules of hf_smallllm outside `models/` that `path` imports, as `file:line module`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.level > 1 or (node.module or "").startswith("hf_smallllm")):
            found.append(f"{path.name}:{node.lineno} {'.' * node.level}{node.module or ''}")
        elif isinstance(node, ast.Import):
            found += [f"{path.name}:{node.lineno} {a.name}" for a in node.names if a.name.startswith("hf_smallllm")]
    return found


def _shipped(path: Path) -> bool:
    return path.name.startswith(("configuration_", "modeling_")) or path.name.endswith("_smallllm.py")


def test_models_import_nothing_above_them():
    """`models/` ships as remote code: the shipped files import only each other (plus torch and transformers); the
    helpers that live beside them but are not shipped may use the bottom layer only, never convert/train/hub/..."""
    offenders = []
    for path in sorted((REPO / "hf_smallllm" / "models").glob("*.py")):
        for hit in _hf_smallllm_imports(path):
            module = hit.split(" ", 1)[1].lstrip(".").removeprefix("hf_smallllm.").split(".")[0]
            if _shipped(path) or module not in BOTTOM:
                offenders.append(hit)
    assert offenders == []


def test_convert_needs_no_lazy_import_cycle_breaker():
    tree = ast.parse((REPO / "hf_smallllm" / "convert" / "__init__.py").read_text(encoding="utf-8"))
    assert not any(isinstance(node, ast.FunctionDef) and node.name == "__getattr__" for node in tree.body)
    assert not (REPO / "hf_smallllm" / "convert" / "tables.py").exists()
    assert not (REPO / "hf_smallllm" / "convert" / "official_layouts.py").exists()


@pytest.mark.parametrize("family", ["btlm", "geb"])
def test_transformers_bookkeeping_keys_are_left_to_transformers(family):
    """A table names `auto_map`, `architectures` and `model_type` to write them; reading must not swallow them, or a
    package checkpoint with remote code loses its auto_map."""
    auto_map = {"AutoConfig": f"configuration_{family}.X"}
    config = FAMILIES[family].config_class(auto_map=auto_map, architectures=["X"])
    assert config.auto_map == auto_map and config.architectures == ["X"]
