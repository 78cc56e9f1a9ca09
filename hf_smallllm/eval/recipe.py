"""The `domain_eval:` section of a training recipe: per-domain validation during the run.

```yaml
domain_eval:
  every_steps: 500          # evaluate every N optimizer steps (and at the start and end of training)
  domains:                  # name: file; omitted -> the five bundled validation domains
    code: data/val/code.jsonl
    en_web: data/val/en_web.txt
  max_documents: 32         # per domain, evenly spaced through the file (null: all)
  max_chars: 2000           # characters per document; plain text is cut into documents of this size
  max_tokens: null          # tokens per document at most (null: the model's context)
  batch_size: 4
  add_bos: false            # prepend BOS so each document's first text token is scored too
  text_field: text          # the text of a JSON-lines record
  plot: domain_eval.png     # PNG of the curves, relative to the run's output_dir (null: no plot)
  at_start: true
  at_end: true
```
`domain_eval: true` takes every default. Results go to the run's metrics file as `eval/<domain>/loss` and
`eval/<domain>/ppl` and to the Trainer's log history.
"""

from typing import Any

from .documents import DEFAULT_CHUNK_CHARS
from .domain_validation import DomainEvalCallback, DomainValidator

SECTION_DEFAULTS: dict[str, Any] = {
    "every_steps": 500,
    "domains": None,
    "max_documents": 32,
    "max_chars": DEFAULT_CHUNK_CHARS,
    "max_tokens": None,
    "batch_size": 4,
    "add_bos": False,
    "text_field": "text",
    "plot": "domain_eval.png",
    "at_start": True,
    "at_end": True,
}


def resolve_section(section) -> dict[str, Any]:
    """The section with defaults filled in; unknown keys and wrong types are errors that name the key."""
    if section is True:
        section = {}
    if not isinstance(section, dict):
        raise ValueError(f"domain_eval: expected a mapping (or true), got {type(section).__name__}")
    unknown = sorted(set(section) - set(SECTION_DEFAULTS))
    if unknown:
        raise ValueError(f"domain_eval: unknown key(s) {', '.join(unknown)}; known keys: "
                         f"{', '.join(SECTION_DEFAULTS)}")
    resolved = {**SECTION_DEFAULTS, **section}
    for key in ("every_steps", "max_chars", "batch_size"):
        if not isinstance(resolved[key], int) or isinstance(resolved[key], bool) or resolved[key] < 1:
            raise ValueError(f"domain_eval.{key}: expected a positive integer, got {resolved[key]!r}")
    for key in ("max_documents", "max_tokens"):
        value = resolved[key]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"domain_eval.{key}: expected a positive integer or null, got {value!r}")
    domains = resolved["domains"]
    if domains is not None and not isinstance(domains, (dict, list)):
        raise ValueError(f"domain_eval.domains: expected a mapping name -> file or a list of name=path, got "
                         f"{domains!r}")
    return resolved


def build_domain_eval_callbacks(section, context) -> list[DomainEvalCallback]:
    """The recipe builder (see `hf_smallllm.train.extensions`): one `DomainEvalCallback` writing to the run's
    metrics file and plotting into its output folder."""
    config = resolve_section(section)
    validator = DomainValidator(
        config["domains"], max_documents=config["max_documents"], max_chars=config["max_chars"],
        max_tokens=config["max_tokens"], batch_size=config["batch_size"], add_bos=config["add_bos"],
        text_field=config["text_field"],
    )
    plot_path = context.output_dir / config["plot"] if config["plot"] else None
    return [DomainEvalCallback(
        validator, every_steps=config["every_steps"], metrics_path=context.metrics_path, plot_path=plot_path,
        tokenizer=context.tokenizer, at_start=config["at_start"], at_end=config["at_end"],
        is_main_process=context.is_main_process,
    )]


__all__ = ["SECTION_DEFAULTS", "build_domain_eval_callbacks", "resolve_section"]
