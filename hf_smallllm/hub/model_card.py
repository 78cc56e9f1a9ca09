"""Model cards for published runs, rendered from the per-family templates in `hf_smallllm/resources/model_cards/`.

A template's YAML front matter is the family's default card metadata (license, language, tags); the body is
Jinja, rendered with `StrictUndefined` so a missing value is an error rather than a placeholder on the Hub. What
fills it comes from the run: the architecture table from `config.json` (parameter count from the safetensors
headers, without loading weights), training tokens from `trainer_state.json`, sequence length and data mixture
from the run's `recipe.yaml`, the evaluation table from the last `eval/<domain>/loss` and `eval/<domain>/ppl` in
`metrics.jsonl`, the snapshot branches being published, and the architecture's name and citation from the family's
record (`hf_smallllm/families/<name>.py`). Metadata goes through `huggingface_hub.ModelCardData` so it is the Hub's
schema (`license`, `language`, `datasets`, `tags`, `base_model`, `library_name`, `pipeline_tag`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..families import FAMILIES, GENERIC_FAMILY
from ..resources import RESOURCES
from ..runfiles import METRICS_NAME, RECIPE_NAME, TRAINER_STATE_NAME, read_metrics, run_dir_of

TEMPLATES = RESOURCES / "model_cards"
BASE_TEMPLATE = "_base.md"
GENERIC_TEMPLATE = GENERIC_FAMILY
# What survives rendering only when something was left unfilled.
PLACEHOLDER_PATTERN = re.compile(r"\{\{|\}\}|\{%|%\}|\[More Information Needed\]|\bTODO\b|\bTBD\b|<placeholder>")

# (label, config field) rows of the architecture table; a field the config lacks is left out. RoPE fields are read
# from `rope_parameters` too, and left out when the config uses ALiBi.
ARCHITECTURE_FIELDS = [
    ("model type", "model_type"), ("hidden size", "hidden_size"), ("layers", "num_hidden_layers"),
    ("attention heads", "num_attention_heads"), ("key/value heads", "num_key_value_heads"),
    ("head size", "head_dim"), ("MLP size", "intermediate_size"), ("activation", "hidden_act"),
    ("norm", "norm_type"), ("position embedding", "position_embedding_type"), ("RoPE theta", "rope_theta"),
    ("rotary fraction", "partial_rotary_factor"), ("RoPE layout", "rope_layout"),
    ("context length", "max_position_embeddings"),
    ("vocabulary", "vocab_size"), ("tied embeddings", "tie_word_embeddings"),
    ("muP base width", "mup_base_hidden_size"),
]


@dataclass(frozen=True)
class SnapshotRow:
    branch: str
    step: int
    tokens: int


ROPE_FIELDS = {"rope_theta", "partial_rotary_factor", "rope_layout"}


def architecture_rows(config: dict) -> list[tuple[str, Any]]:
    rope = dict(config.get("rope_parameters") or {})
    rows = []
    for label, key in ARCHITECTURE_FIELDS:
        if key in ROPE_FIELDS and config.get("position_embedding_type") == "alibi":
            continue
        value = config.get(key, rope.get(key))
        if value is not None:
            rows.append((label, value))
    return rows


def _front_matter(text: str) -> tuple[dict, str]:
    if text.startswith("---\n"):
        end = text.index("\n---\n", 4)
        return yaml.safe_load(text[4:end]) or {}, text[end + 5:]
    return {}, text


def _environment():
    import jinja2

    def load(name):
        path = TEMPLATES / name
        if not path.exists():
            return None
        return _front_matter(path.read_text(encoding="utf-8"))[1], str(path), lambda: True

    return jinja2.Environment(loader=jinja2.FunctionLoader(load), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, autoescape=False)


def template_name(family: str) -> str:
    """The family record's template (`Family.model_card`), or the generic one for a custom config."""
    return FAMILIES[family].model_card if family in FAMILIES else f"{GENERIC_TEMPLATE}.md"


def count_parameters(folder: Path) -> int:
    """Parameters stored in the folder's safetensors files (shared tensors counted once, as saved)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                total += math.prod(f.get_slice(name).get_shape())
    return total


def _human(count: float, units=(("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3))) -> str:
    for suffix, scale in units:
        if count >= scale:
            return f"{count / scale:.3g}{suffix}"
    return f"{int(count)}"


def mixture_table(recipe: dict | None) -> str:
    """Markdown table of the data mixture: one column per phase of `data.mixture`, or the sources' `weight`."""
    data = (recipe or {}).get("data") or {}
    sources = [s.get("name") or ", ".join(s.get("paths") or []) or str(s.get("dataset"))
               for s in data.get("sources") or []]
    phases = data.get("mixture") or []
    if phases:
        names = list(dict.fromkeys(sources + [n for p in phases for n in p.get("weights", {})]))
        header, columns = [], []
        for index, phase in enumerate(phases):
            until = phase.get("until")
            title = f"phase {index + 1}" + (f" (to {float(until):.0%})" if until is not None else "")
            header.append(title)
            start, end = phase.get("weights", {}), phase.get("end_weights")
            columns.append({n: (f"{start.get(n, 0):g} → {end.get(n, 0):g}" if end else f"{start.get(n, 0):g}")
                            for n in names})
        lines = ["| source | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
        lines += [f"| {n} | " + " | ".join(c[n] for c in columns) + " |" for n in names]
        return "\n".join(lines)
    if sources:
        weights = [float(s.get("weight", 1.0)) for s in data["sources"]]
        total = sum(weights) or 1.0
        lines = ["| source | weight |", "|---|---|"]
        lines += [f"| {n} | {w / total:.3g} |" for n, w in zip(sources, weights, strict=True)]
        return "\n".join(lines)
    return ""


def evaluation_rows(metrics: list[dict]) -> tuple[list[dict], int | None]:
    """The latest per-domain validation loss (and ppl) of the run, with the step they were measured at."""
    latest: dict[str, dict] = {}
    for record in metrics:
        for key, value in record.items():
            match = re.fullmatch(r"eval/(.+)/loss", key)
            if match and isinstance(value, (int, float)):
                domain = match.group(1)
                ppl = record.get(f"eval/{domain}/ppl")
                latest[domain] = {"domain": domain, "loss": float(value), "step": int(record["step"]),
                                  "ppl": float(ppl) if ppl is not None else math.exp(min(float(value), 700))}
    rows = sorted(latest.values(), key=lambda r: r["domain"])
    for row in rows:
        row["ppl_text"] = f"{row['ppl']:.2f}" if row["ppl"] < 1e6 else f"{row['ppl']:.3g}"
    return rows, (max(r["step"] for r in rows) if rows else None)


def render_model_card(folder: str | Path, repo_id: str, *, family: str | None = None, recipe: dict | None = None,
                      metrics: list[dict] | str | Path | None = None, snapshots: list[SnapshotRow] = (),
                      base_model: str | None = None, license: str | None = None, language: list[str] | None = None,
                      datasets: list[str] | None = None, tags: list[str] | None = None, model_name: str | None = None):
    """A `huggingface_hub.ModelCard` for the model in `folder` (a save_pretrained or checkpoint folder).

    `recipe`, `metrics` default to the run's `recipe.yaml` and `metrics.jsonl` next to a `checkpoint-N` folder;
    `family` defaults to the family of the config's model_type. Raises ValueError if anything would render as a
    placeholder.
    """
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    run_dir = run_dir_of(folder)
    if recipe is None and (run_dir / RECIPE_NAME).exists():
        recipe = yaml.safe_load((run_dir / RECIPE_NAME).read_text(encoding="utf-8"))
    if metrics is None:
        metrics = run_dir / METRICS_NAME
    if not isinstance(metrics, list):
        metrics = read_metrics(metrics)
    if family is None:
        from ..convert.remote_code import auto_classes_for

        config_class = auto_classes_for(config.get("model_type", ""))["AutoConfig"]
        family = next((f.name for f in FAMILIES.values() if f.config_class is config_class), GENERIC_TEMPLATE)
    state_path = folder / TRAINER_STATE_NAME
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    tokens_seen = int(state.get("num_input_tokens_seen") or 0)
    global_step = int(state.get("global_step") or 0)
    if not global_step and metrics:
        global_step = max(int(r["step"]) for r in metrics)
        tokens_seen = tokens_seen or max(int(r.get("tokens") or 0) for r in metrics)

    name = template_name(family)
    record = FAMILIES.get(family)
    defaults, _ = _front_matter((TEMPLATES / name).read_text(encoding="utf-8"))
    parameters = count_parameters(folder)
    data = (recipe or {}).get("data") or {}
    card_data = ModelCardData(
        license=license or defaults.get("license"),
        language=list(language or defaults.get("language") or []),
        datasets=list(datasets) if datasets else None,
        tags=list(dict.fromkeys(["hf_smallllm", "text-generation", *(defaults.get("tags") or []), *(tags or [])])),
        base_model=base_model,
        library_name="transformers",
        pipeline_tag="text-generation",
        model_name=model_name or repo_id.split("/")[-1],
    )
    architecture = architecture_rows(config)
    architecture.insert(0, ("parameters", f"{parameters:,}"))
    evaluation, evaluation_step = evaluation_rows(metrics)
    has_tokenizer = any((folder / f).exists() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"))
    body = _environment().get_template(name).render(
        model_name=card_data.model_name, repo_id=repo_id,
        architecture_name=record.title if record else defaults["architecture"], base_model=base_model,
        architecture=architecture, parameters_text=_human(parameters),
        tokens_seen=tokens_seen, tokens_seen_text=_human(tokens_seen), global_step=global_step,
        sequence_length=data.get("seq_len"), packing=data.get("packing"), mixture_table=mixture_table(recipe),
        evaluation=evaluation, evaluation_step=evaluation_step, has_tokenizer=has_tokenizer,
        snapshots=sorted(snapshots, key=lambda s: s.step),
        citation=record.citation if record else None,
        official=record.official if record else None, family_title=record.title if record else None,
    )
    content = f"---\n{card_data.to_yaml()}\n---\n\n{body.strip()}\n"
    leftover = PLACEHOLDER_PATTERN.search(content)
    if leftover:
        raise ValueError(f"model card for {repo_id} still holds a placeholder near {content[leftover.start():][:60]!r}")
    return ModelCard(content)


__all__ = ["SnapshotRow", "TEMPLATES", "count_parameters", "evaluation_rows", "mixture_table", "render_model_card"]
