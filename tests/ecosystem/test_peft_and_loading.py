"""PEFT knows the smallllm_* model types (LoRA and QLoRA without target_modules), also when peft is imported after
the package; Llama-layout checkpoints load into the Llama-shaped families without a mismatch warning, while a real
mismatch still warns."""

import contextlib
import logging

import pytest
import torch

from hf_smallllm.families import FAMILIES, preset_config

from .conftest import run_python

PROJECTIONS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def _lora_modules(peft_model) -> dict[str, list[str]]:
    """{layer index: sorted names of the projections that carry a LoRA adapter}."""
    found = {}
    for name, _ in peft_model.named_modules():
        if name.endswith(".lora_A"):
            parts = name.split(".")
            layer = parts[parts.index("layers") + 1]
            found.setdefault(layer, []).append(parts[-2])
    return {layer: sorted(names) for layer, names in found.items()}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_lora_without_target_modules_wraps_attention_and_mlp(family):
    from peft import LoraConfig, get_peft_model

    model = FAMILIES[family].causal_lm_class(preset_config(family, "tiny"))
    peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM"))
    assert _lora_modules(peft_model) == {str(i): PROJECTIONS for i in range(model.config.num_hidden_layers)}


def test_defaults_registered_when_peft_is_imported_after_the_package(tmp_path):
    code = """
import json, sys
import hf_smallllm
assert "peft" not in sys.modules, "importing hf_smallllm must not import peft"
from peft import LoraConfig, get_peft_model
from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as ia3
model = hf_smallllm.BTLMForCausalLM(hf_smallllm.preset_config("btlm", "tiny"))
peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM"))
names = sorted({n.split(".")[-2] for n, _ in peft_model.named_modules() if n.endswith(".lora_A")})
print("RESULT " + json.dumps({"lora": names, "ia3": ia3["smallllm_btlm"] == ia3["llama"]}))
"""
    result = run_python(code, tmp_path, blocked=False)
    assert result == {"lora": PROJECTIONS, "ia3": True}


def test_register_keeps_an_entry_the_user_made_first():
    from peft.utils import constants

    from hf_smallllm.models.peft_smallllm import register_peft_defaults

    table = constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    saved = table.pop("smallllm_geb")
    try:
        table["smallllm_geb"] = ["q_proj"]
        register_peft_defaults()
        assert table["smallllm_geb"] == ["q_proj"]
    finally:
        table["smallllm_geb"] = saved


@pytest.mark.slow
@pytest.mark.parametrize("family", ["btlm", "geb"])
def test_qlora_default_targets_on_a_4bit_base(family, tmp_path):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from hf_smallllm.sft.adapters import load_base_model

    # layer sizes multiples of 64: bitsandbytes' CPU 4-bit kernels need them
    FAMILIES[family].causal_lm_class(preset_config(family, "tiny", intermediate_size=128)).save_pretrained(tmp_path)
    model = load_base_model(tmp_path, "4bit")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM"))
    assert _lora_modules(peft_model)["0"] == PROJECTIONS
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    peft_model(ids, labels=ids).loss.backward()
    # lora_B starts at zero, so lora_A's first gradient is zero; every lora_B must get one
    grads = {n: p.grad for n, p in peft_model.named_parameters() if "lora_B" in n}
    assert len(grads) == 7 * model.config.num_hidden_layers
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())


def _llama_folder(path):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(path)
    return model


@contextlib.contextmanager
def transformers_warnings():
    """The messages transformers logs meanwhile (its library logger does not propagate to pytest's handler)."""
    messages = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    library_logger = logging.getLogger("transformers")
    library_logger.addHandler(handler)
    try:
        yield messages
    finally:
        library_logger.removeHandler(handler)


@pytest.mark.parametrize("family", ["tinyllama", "chuxin", "skywork"])
def test_llama_layout_loads_into_llama_shaped_families_without_mismatch_warning(family, tmp_path):
    reference = _llama_folder(tmp_path)
    with transformers_warnings() as messages:
        model = FAMILIES[family].causal_lm_class.from_pretrained(tmp_path).eval()
    assert not [m for m in messages if "to instantiate a model of type" in m]
    assert model.config.model_type == f"smallllm_{family}"
    ids = torch.tensor([[1, 5, 9, 77]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)


def test_a_real_mismatch_still_warns(tmp_path):
    _llama_folder(tmp_path)
    with transformers_warnings() as messages, contextlib.suppress(ValueError):  # config validation may also refuse it
        FAMILIES["btlm"].config_class.from_pretrained(tmp_path)
    assert [m for m in messages if "to instantiate a model of type `smallllm_btlm`" in m]
