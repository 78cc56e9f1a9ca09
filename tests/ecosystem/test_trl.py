"""TRL's own trainers on folders the package wrote, used the way TRL's documentation shows (no package glue):
`SFTTrainer(model=<path>)`, `DPOTrainer` without a reference model (TRL loads a frozen copy from the path) and
with a PEFT LoRA config without target modules (the reference is the policy with its adapters disabled). TRL's
fused LM head, which computes every log-probability of SFT and DPO, also matches the model's own logits for a muP
model whose logits are scaled (BTLM)."""

import copy
import json

import pytest
import torch

from hf_smallllm.families import FAMILIES, preset_config
from hf_smallllm.sft.records import RESOURCES
from hf_smallllm.sft.templates import chat_format_for, install_chat_template

STEPS = 8


def _records(name: str, count: int) -> list[dict]:
    lines = (RESOURCES / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:count]]


def _folder(family: str, tokenizer, path):
    """A tiny model with the family's chat template (its tokens added, the embedding grown) saved with its
    tokenizer, as `hf-smallllm sft template` + a training checkpoint would leave it."""
    tokenizer = copy.deepcopy(tokenizer)  # the session's tokenizer stays without a template
    model = FAMILIES[family].causal_lm_class(preset_config(family, "tiny", vocab_size=len(tokenizer),
                                                           initializer_range=0.1))
    install_chat_template(tokenizer, chat_format_for(family), model=model)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _cpu_args(config_class, output_dir, **values):
    """TRL's config with the defaults that are wrong on CPU set explicitly (bf16 autocast, checkpointing)."""
    from transformers import TrainingArguments

    checkpointing = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
                     else "gradient_checkpointing")
    return config_class(output_dir=str(output_dir), max_steps=STEPS, logging_steps=1, save_strategy="no",
                        report_to=[], use_cpu=True, bf16=False, seed=0, disable_tqdm=True,
                        **{checkpointing: False}, **values)


def _losses(trainer) -> list[float]:
    return [log["loss"] for log in trainer.state.log_history if "loss" in log]


def _falls(losses: list[float]) -> bool:
    return len(losses) == STEPS and sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.02


@pytest.mark.slow
@pytest.mark.parametrize("family", ["btlm", "geb"])
def test_sft_trainer_from_a_path(family, corpus_tokenizer, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    folder = _folder(family, corpus_tokenizer, tmp_path / "model")
    dataset = Dataset.from_list(_records("instructions.jsonl", 32))
    args = _cpu_args(SFTConfig, tmp_path / "run", per_device_train_batch_size=8, learning_rate=3e-3,
                     assistant_only_loss=True, max_length=256)
    trainer = SFTTrainer(model=folder, args=args, train_dataset=dataset)
    assert type(trainer.model).__module__.startswith("hf_smallllm.models.")
    trainer.train()
    assert _falls(_losses(trainer)), _losses(trainer)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["btlm", "geb"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_dpo_trainer_without_a_reference_model(family, lora, corpus_tokenizer, tmp_path):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    folder = _folder(family, corpus_tokenizer, tmp_path / "model")
    dataset = Dataset.from_list(_records("preferences.jsonl", 16))
    args = _cpu_args(DPOConfig, tmp_path / "run", per_device_train_batch_size=8,
                     learning_rate=2e-2 if lora else 2e-3, beta=0.5, max_length=256)
    peft_config = LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=32) if lora else None
    trainer = DPOTrainer(model=folder, args=args, train_dataset=dataset, peft_config=peft_config)
    if lora:  # the reference is the policy with its adapters disabled; PEFT found our default targets
        assert trainer.ref_model is None
        adapted = {n.split(".")[-2] for n, _ in trainer.model.named_modules() if n.endswith(".lora_A")}
        assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    else:  # TRL loaded a frozen copy of the folder (it reads config.auto_map for a model type it does not know)
        assert trainer.ref_model is not None and type(trainer.ref_model) is type(trainer.model)
    trainer.train()
    losses = _losses(trainer)
    assert abs(losses[0] - 0.6931) < 1e-3 and _falls(losses), losses


def test_trl_fused_head_matches_the_model_for_scaled_logits():
    from trl.trainer.utils import add_fused_lm_head

    # a muP width multiplier of 4: the logits are multiplied by mup_output_alpha / 4
    model = FAMILIES["btlm"].causal_lm_class(preset_config("btlm", "tiny", mup_base_hidden_size=16)).eval()
    assert model.config.logit_scale == pytest.approx(model.config.mup_output_alpha / 4)
    ids = torch.tensor([[1, 5, 9, 77, 3, 4, 12]])
    with torch.no_grad():
        expected = torch.log_softmax(model(ids).logits, -1)[0, :-1].gather(-1, ids[0, 1:, None])[:, 0]
        add_fused_lm_head(model)
        fused = model(input_ids=ids, labels=ids, fused_lm_head=True).log_probs
    torch.testing.assert_close(fused.reshape(-1)[-expected.numel():], expected, rtol=1e-5, atol=1e-5)
