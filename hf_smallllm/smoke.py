"""End-to-end check of the model classes: build a tiny model of every family, save it, load it back through
`AutoModelForCausalLM.from_pretrained` and generate, comparing the reloaded model's logits with the original's."""

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from .families import FAMILIES, preset_config


@dataclass
class SmokeResult:
    family: str
    parameters: int
    saved_to: Path
    max_logit_diff: float
    generated: list[int]


def run_smoke(output_dir: str | Path | None = None, families: list[str] | None = None,
              new_tokens: int = 8, seed: int = 0) -> list[SmokeResult]:
    """For each family: tiny random model -> save_pretrained -> AutoModelForCausalLM.from_pretrained -> greedy
    generation. Raises if the reloaded model's logits differ from the original's by more than 1e-5."""
    families = families or list(FAMILIES)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    root = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="hf_smallllm_smoke_"))
    results = []
    for family in families:
        torch.manual_seed(seed)
        model = FAMILIES[family].causal_lm_class(preset_config(family, "tiny")).eval()
        path = root / family
        model.save_pretrained(path)
        reloaded = AutoModelForCausalLM.from_pretrained(path).eval()
        if type(reloaded) is not type(model):
            raise RuntimeError(f"{family}: AutoModelForCausalLM loaded {type(reloaded).__name__}")
        prompt = torch.tensor([[3, 14, 15, 92, 65, 35]])
        with torch.no_grad():
            diff = (model(prompt).logits - reloaded(prompt).logits).abs().max().item()
            generated = reloaded.generate(prompt, max_new_tokens=new_tokens, do_sample=False,
                                          pad_token_id=reloaded.config.eos_token_id)
        if diff > 1e-5:
            raise RuntimeError(f"{family}: reloaded logits differ by {diff:.3g}")
        results.append(SmokeResult(family, model.num_parameters(), path, diff, generated[0, prompt.shape[1]:].tolist()))
    return results
