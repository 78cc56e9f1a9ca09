"""LoRA / QLoRA / full fine-tuning runs on CPU: the loss drops on the bundled instruction set, the merged export
reproduces the adapter model's logits, an adapter run resumes exactly, and QLoRA keeps learning after an eval pass
(the bitsandbytes CPU 4-bit repacking trap)."""

import shutil

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_smallllm.runfiles import read_metrics
from hf_smallllm.sft import apply_lora, disable_cpu_4bit_repacking, load_base_model, lora_config, run_sft
from hf_smallllm.sft.templates import resize_embeddings_for

from .conftest import sft_recipe, tiny_model


def lora_weights(folder):
    return {k: v for k, v in load_file(f"{folder}/adapter_model.safetensors").items()}


@pytest.mark.slow
def test_lora_lowers_loss_merges_exactly_and_resumes(tiny_checkpoint, tmp_path):
    base = tiny_checkpoint("skywork")  # skywork: the template adds [USER]/[BOT]/[SEP], so embeddings grow
    recipe = sft_recipe(tmp_path / "run", model={"init_from": base}, optimizer={"lr": 5e-2}, lora={"alpha": 64},
                        training={"max_steps": 12, "save_steps": 6})
    result = run_sft(recipe)
    losses = [r["loss"] for r in read_metrics(result.metrics_path) if "loss" in r]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.15, losses
    assert result.chat_format == "skywork" and result.report.kept > 400

    # the merged model (package format, no PEFT) reproduces the adapter model's logits
    checkpoint = tmp_path / "run" / "checkpoint-12"
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    assert "[SEP]" in tokenizer.get_vocab() and tokenizer.chat_template
    base_model = AutoModelForCausalLM.from_pretrained(base)
    resize_embeddings_for(base_model, tokenizer)
    adapter_model = PeftModel.from_pretrained(base_model, checkpoint).eval()
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir).eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 plus 3?"},
                                         {"role": "assistant", "content": "2 plus 3 is 5."}], return_tensors="pt",
                                        return_dict=True)["input_ids"]
    with torch.no_grad():
        expected, got = adapter_model(ids).logits, merged(ids).logits
    assert torch.allclose(expected, got, atol=1e-4), (expected - got).abs().max()
    reference = AutoModelForCausalLM.from_pretrained(base).eval()
    resize_embeddings_for(reference, tokenizer)
    with torch.no_grad():
        assert not torch.allclose(reference(ids).logits, got, atol=1e-3)  # the adapter did change the model
    assert merged.generation_config.eos_token_id == [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("[SEP]")]

    # the CLI merge of the adapter checkpoint writes the same model
    from hf_smallllm_cli import main

    assert main(["sft", "merge", "--adapter", str(checkpoint), "--output", str(tmp_path / "cli-merged")]) == 0
    with torch.no_grad():
        cli_logits = AutoModelForCausalLM.from_pretrained(tmp_path / "cli-merged")(ids).logits
    assert torch.allclose(cli_logits, got, atol=1e-5)

    # resume from step 6 in a fresh folder: same adapter at step 12 (optimizer, scheduler, data position restored)
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(tmp_path / "run" / "checkpoint-6", resumed_dir / "checkpoint-6")
    resumed = run_sft(recipe, overrides={"training.output_dir": str(resumed_dir), "export.merged": False},
                      resume=True)
    assert resumed.global_step == 12
    want, have = lora_weights(checkpoint), lora_weights(resumed_dir / "checkpoint-12")
    assert want.keys() == have.keys()
    for key in want:
        assert torch.allclose(want[key], have[key], atol=1e-6), key
    with pytest.raises(ValueError, match="already holds checkpoints"):
        run_sft(recipe)


def _lora_grads(model_dir, fix: bool, eval_pass: bool):
    """Train a q/v LoRA on a 4-bit base for one step, optionally run one eval forward, then return the LoRA
    gradients of a second training step."""
    model = load_base_model(model_dir, "4bit")
    torch.manual_seed(0)
    model = apply_lora(model, lora_config(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]),
                       quantized=True)
    if not fix:
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = True  # bitsandbytes' own setting on an AVX512-BF16 CPU
    ids = torch.randint(3, 500, (2, 24), generator=torch.Generator().manual_seed(1))
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    if eval_pass:
        model.eval()
        with torch.no_grad():
            model(input_ids=ids)
        model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    return [p.grad for p in params]


def _same(grads, reference) -> bool:
    return all(g is not None and torch.allclose(g, r, rtol=1e-4, atol=1e-7)
               for g, r in zip(grads, reference, strict=True))


@pytest.mark.slow
def test_qlora_gradients_survive_an_eval_forward(tiny_checkpoint):
    """Train, eval, train on a 4-bit base: the LoRA gradients are exactly those of a run without the eval pass.
    Fails without `disable_cpu_4bit_repacking` (bitsandbytes repacks the weight at eval and drops input grads)."""
    base = tiny_checkpoint("tinyllama")
    reference = _lora_grads(base, fix=True, eval_pass=False)
    assert all(g is not None and g.abs().sum() > 0 for g in reference)
    assert _same(_lora_grads(base, fix=True, eval_pass=True), reference)
    if _same(_lora_grads(base, fix=False, eval_pass=True), reference):
        pytest.skip("this bitsandbytes/CPU does not repack 4-bit weights at eval; the guard is not exercised")
    # reaching here: without the fix the gradients after an eval pass are wrong, with it they are exact


def test_qlora_through_trainer_eval_trains_as_without_eval(tiny_checkpoint, tmp_path):
    """Through Trainer: a QLoRA run that evaluates every 2 steps ends with the same adapter as one that does not
    evaluate in between, and the merged export re-loads the base in full precision."""
    base = tiny_checkpoint("tinyllama")

    def run(name, eval_steps):
        recipe = sft_recipe(tmp_path / name, model={"init_from": base, "quantization": "4bit"},
                            lora={"target_modules": ["q_proj", "v_proj"]}, export={"merged": name == "evals"},
                            data={"eval_fraction": 0.02, "sources": [{"name": "b", "path": "bundled:instructions.jsonl",
                                                                      "limit": 150}]},
                            training={"max_steps": 4, "save_steps": 4, "eval_steps": eval_steps,
                                      "per_device_batch_size": 4})
        return run_sft(recipe)

    with_evals = run("evals", 2)
    assert sum("eval_loss" in r for r in read_metrics(with_evals.metrics_path)) >= 2
    without = run("plain", None)
    want, have = lora_weights(tmp_path / "plain" / "checkpoint-4"), lora_weights(tmp_path / "evals" / "checkpoint-4")
    assert all(torch.allclose(want[k], have[k], atol=1e-6) for k in want), "the eval pass changed QLoRA training"
    merged = AutoModelForCausalLM.from_pretrained(with_evals.merged_dir)
    assert merged.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32
    assert with_evals.eval_loss is not None and without.eval_loss is not None


def test_8bit_lora_trains(tiny_checkpoint):
    model = load_base_model(tiny_checkpoint("tinyllama"), "8bit")
    assert disable_cpu_4bit_repacking(model) == 0
    model = apply_lora(model, lora_config(r=4, alpha=8, dropout=0.0), quantized=True)
    ids = torch.randint(3, 500, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]  # lora_A has no grad while B is 0
    assert len(grads) == 14 and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_full_finetune_of_an_in_memory_model_with_packing(tokenizer, tmp_path):
    model = tiny_model("geb", tokenizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = sft_recipe(tmp_path / "full", lora={"enabled": False}, data={"packing": True, "seq_len": 256},
                        training={"max_steps": 3, "per_device_batch_size": 2})
    result = run_sft(recipe, model=model, tokenizer=tokenizer)
    assert tokenizer.chat_template is None  # the caller's tokenizer is left as it was
    assert result.merged_dir == result.final_checkpoint == tmp_path / "full" / "checkpoint-3"
    loaded = AutoModelForCausalLM.from_pretrained(result.merged_dir)
    saved_tokenizer = AutoTokenizer.from_pretrained(result.merged_dir)
    assert "<|assistant|>" in saved_tokenizer.get_vocab() and loaded.config.vocab_size >= len(saved_tokenizer)
    changed = [k for k, v in loaded.state_dict().items() if k in before and v.shape == before[k].shape
               and not torch.equal(v, before[k])]
    assert len(changed) > 10


def test_recipe_errors_are_clear(tmp_path):
    from hf_smallllm.train.recipe import RecipeError

    with pytest.raises(RecipeError, match="quantized model can only be fine-tuned with LoRA"):
        run_sft(sft_recipe(tmp_path, model={"init_from": "x", "quantization": "4bit"}, lora={"enabled": False}))
    with pytest.raises(RecipeError, match="data.on_bad_sample"):
        run_sft(sft_recipe(tmp_path, data={"on_bad_sample": "ignore"}))
    with pytest.raises(RecipeError, match="unknown keys"):
        run_sft(sft_recipe(tmp_path, lora={"rank": 8}))
    with pytest.raises(FileNotFoundError, match="model.init_from"):
        run_sft(sft_recipe(tmp_path, model={"init_from": str(tmp_path / "missing")}))
