"""muP learning-rate groups: membership, learning rates, weight decay, tying, wrappers, optimizers, schedulers."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from hf_smallllm import FAMILIES, preset_config
from hf_smallllm.models.mup_smallllm import mup_lr_role
from hf_smallllm.train.mup import create_mup_optimizer, get_mup_param_groups

LR, WD = 1e-2, 0.1


def mup_model(family="btlm", **overrides):
    """Tiny muP model with different width and MLP multipliers (m = 2, m_ffn = 170 / 42.5 = 4)."""
    config = preset_config(family, "tiny", intermediate_size=170, mup_base_hidden_size=32.0,
                           mup_base_intermediate_size=42.5, **overrides)
    return FAMILIES[family].causal_lm_class(config)


def by_name(model, groups) -> dict[str, str]:
    """parameter name -> group name."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: group["name"] for group in groups for p in group["params"]}


def test_groups_follow_the_btlm_recipe():
    model = mup_model()
    groups = get_mup_param_groups(model, LR, WD)
    settings = {g["name"]: (g["lr"], g["weight_decay"]) for g in groups}
    assert settings == {"hidden": (pytest.approx(LR / 2), WD), "ffn_output": (pytest.approx(LR / 4), WD),
                        "embeddings": (LR, WD), "no_decay": (LR, 0.0)}
    membership = by_name(model, groups)
    for name, group in membership.items():
        if name.endswith(".bias") or "norm" in name:
            assert group == "no_decay", name
        elif "down_proj" in name:
            assert group == "ffn_output", name
        elif any(f"{m}." in name for m in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj")):
            assert group == "hidden", name
        else:
            assert name == "model.embed_tokens.weight" and group == "embeddings"
    # the tied head is the embedding and is counted once
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert len(membership) == len({id(p) for p in model.parameters()})
    assert sum(len(g["params"]) for g in groups) == len(membership)


def test_model_method_matches_the_training_function():
    model = mup_model()
    method, function = model.get_mup_param_groups(LR, WD), get_mup_param_groups(model, LR, WD)
    assert [(g["name"], g["lr"], g["params"]) for g in method] == [(g["name"], g["lr"], g["params"]) for g in function]


def test_untied_head_and_biasless_family_group_correctly():
    model = mup_model("tinyllama")  # RMSNorm, no biases, untied head
    membership = by_name(model, get_mup_param_groups(model, LR, WD))
    assert membership["lm_head.weight"] == "embeddings"
    assert membership["model.embed_tokens.weight"] == "embeddings"
    assert membership["model.norm.weight"] == "no_decay"
    assert membership["model.layers.0.mlp.down_proj.weight"] == "ffn_output"


def test_frozen_parameters_are_left_out():
    model = mup_model()
    model.model.embed_tokens.weight.requires_grad_(False)
    groups = get_mup_param_groups(model, LR, WD)
    assert "embeddings" not in {g["name"] for g in groups}


def test_ddp_style_module_wrapper_is_unwrapped():
    class Wrapper(nn.Module):  # what DistributedDataParallel and accelerate's wrappers look like
        def __init__(self, module):
            super().__init__()
            self.module = module

    model = mup_model()
    plain = get_mup_param_groups(model, LR, WD)
    wrapped = get_mup_param_groups(Wrapper(Wrapper(model)), LR, WD)
    assert [(g["name"], g["lr"], g["params"]) for g in wrapped] == [(g["name"], g["lr"], g["params"]) for g in plain]


def test_peft_lora_adapters_get_fan_in_based_learning_rates():
    model = get_peft_model(mup_model(), LoraConfig(r=4, target_modules=["q_proj", "down_proj"], lora_dropout=0.0))
    groups = get_mup_param_groups(model, LR, WD)
    membership = by_name(model, groups)
    assert all("lora_" in name for name in membership)  # the frozen base model is not trained
    lr_of = {g["name"]: g["lr"] for g in groups}
    for name, group in membership.items():
        if "lora_B" in name:  # fan-in = rank: trains like an input layer
            assert group == "embeddings", name
        elif "q_proj.lora_A" in name:  # fan-in = width
            assert group == "hidden" and lr_of[group] == pytest.approx(LR / 2), name
        elif "down_proj.lora_A" in name:  # fan-in = MLP width
            assert group == "ffn_output" and lr_of[group] == pytest.approx(LR / 4), name


@pytest.mark.parametrize("name,role", [
    ("model.layers.0.self_attn.q_proj.weight", "hidden"),
    ("module.model.layers.3.mlp.up_proj.weight", "hidden"),
    ("model.layers.0.mlp.down_proj.weight", "ffn_output"),
    ("base_model.model.model.layers.0.self_attn.o_proj.base_layer.weight", "hidden"),
    ("base_model.model.model.layers.0.mlp.down_proj.lora_A.default.weight", "ffn_output"),
    ("base_model.model.model.layers.0.mlp.down_proj.lora_B.default.weight", "base"),
    ("base_model.model.model.layers.0.self_attn.v_proj.modules_to_save.default.weight", "hidden"),
    ("model.embed_tokens.weight", "base"),
    ("lm_head.weight", "base"),
])
def test_lr_role_of_parameter_names(name, role):
    assert mup_lr_role(name) == role


def test_models_without_mup_raise_a_clear_error():
    model = FAMILIES["tinyllama"].causal_lm_class(preset_config("tinyllama", "tiny"))
    with pytest.raises(ValueError, match="mup_base_hidden_size"):
        get_mup_param_groups(model, LR, WD)
    with pytest.raises(ValueError, match="mup_base_hidden_size"):
        model.get_mup_param_groups(LR)
    with pytest.raises(ValueError, match="mup_base_hidden_size"):
        get_mup_param_groups(nn.Linear(2, 2), LR, WD)


@pytest.mark.parametrize("lr,weight_decay,message", [(0.0, 0.0, "lr=0.0"), (1e-3, -0.1, "weight_decay=-0.1")])
def test_bad_hyperparameters_raise(lr, weight_decay, message):
    with pytest.raises(ValueError, match=message):
        get_mup_param_groups(mup_model(), lr, weight_decay)


def test_scheduler_scales_every_group_and_keeps_the_mup_ratios():
    model = mup_model()
    optimizer = create_mup_optimizer(model, LR, WD)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.9, 0.95)
    initial = {g["name"]: g["lr"] for g in optimizer.param_groups}
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)
    ids = torch.randint(3, 256, (2, 8))
    for _ in range(3):
        model(ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(initial[group["name"]] * 0.125)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["embeddings"] / lrs["hidden"] == pytest.approx(2.0)
    assert lrs["embeddings"] / lrs["ffn_output"] == pytest.approx(4.0)


def test_trainer_trains_with_mup_groups_and_schedules_every_group(tmp_path):
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from hf_smallllm.train.mup import mup_optimizer_cls_and_kwargs

    class RecordLearningRates(TrainerCallback):
        def __init__(self):
            self.steps = []

        def on_step_end(self, args, state, control, optimizer=None, **kwargs):
            self.steps.append({g["name"]: g["lr"] for g in optimizer.param_groups})

    model = mup_model()
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=LR, weight_decay=WD, adam_beta2=0.95,
                             lr_scheduler_type="linear", warmup_steps=2, max_steps=5, per_device_train_batch_size=2,
                             report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)
    ids = torch.randint(3, 256, (10, 16))
    dataset = [{"input_ids": row, "labels": row} for row in ids]
    recorder = RecordLearningRates()
    trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[recorder],
                      optimizer_cls_and_kwargs=mup_optimizer_cls_and_kwargs(args))
    trainer.train()
    assert {g["name"] for g in trainer.optimizer.param_groups} == {"hidden", "ffn_output", "embeddings", "no_decay"}
    assert trainer.optimizer.defaults["betas"] == (0.9, 0.95)
    assert len(recorder.steps) == 5
    base_lrs = [step["embeddings"] for step in recorder.steps]
    assert len(set(base_lrs)) > 2  # warmup and decay moved the lr ...
    for step in recorder.steps:  # ... of every group by the same factor
        assert step["no_decay"] == pytest.approx(step["embeddings"])
        assert step["hidden"] == pytest.approx(step["embeddings"] / 2)
        assert step["ffn_output"] == pytest.approx(step["embeddings"] / 4)
    # the factory is not consumed: a second optimizer for the same Trainer has muP groups too
    trainer.optimizer = None
    assert {g["name"] for g in trainer.create_optimizer().param_groups} >= {"hidden", "ffn_output"}
