"""The recipe's `publish:` section: publish snapshots to the Hub while the run trains.

```yaml
publish:
  repo_id: me/tiny-tinyllama          # required
  branch_template: olmo               # olmo (step{step}-tokens{tokens}B) | tinyllama | a custom template
  every_steps: 50                     # which checkpoints become branches (default: every saved checkpoint)
  steps: [10, 20]                     # and/or these steps
  tags: {100: v1.0}                   # milestone tags, step -> tag
  final: true                         # publish the final model + model card + revisions.txt to main
  private: false
  retries: 3
  backoff_s: 2.0
  final_timeout_s: 1800               # how long train end waits for pending snapshots
  endpoint: null                      # default: HF_ENDPOINT / huggingface.co; the token comes from HF_TOKEN or login
  card: {license: apache-2.0, language: [en], datasets: [], tags: [], base_model: null}
```
A token never goes in a recipe (recipes are shared and copied into run folders): set `HF_TOKEN` or log in.
"""

from __future__ import annotations

from .callback import HubPublishCallback

SECTION_KEYS = {"repo_id", "branch_template", "every_steps", "steps", "tags", "final", "private", "retries",
                "backoff_s", "final_timeout_s", "endpoint", "card", "create", "overwrite", "remote_code"}
CARD_KEYS = {"license", "language", "datasets", "tags", "base_model", "model_name"}


def build_publish_callbacks(section: dict, context) -> list:
    """[HubPublishCallback] for the main process (other processes publish nothing)."""
    if not isinstance(section, dict):
        raise ValueError(f"the publish section must be a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - SECTION_KEYS)
    if "token" in section:
        raise ValueError("publish.token: do not put a Hub token in a recipe; set HF_TOKEN or run `hf auth login`")
    if unknown:
        raise ValueError(f"unknown publish option(s) {unknown}; known: {', '.join(sorted(SECTION_KEYS))}")
    if not section.get("repo_id"):
        raise ValueError("the publish section needs repo_id (owner/name)")
    card = dict(section.get("card") or {})
    bad_card = sorted(set(card) - CARD_KEYS)
    if bad_card:
        raise ValueError(f"unknown publish.card option(s) {bad_card}; known: {', '.join(sorted(CARD_KEYS))}")
    if not context.is_main_process:
        return []
    card.setdefault("recipe", context.recipe)
    card.setdefault("metrics", context.metrics_path)
    options = {k: section[k] for k in ("branch_template", "private", "endpoint", "create", "overwrite", "remote_code")
               if k in section}
    return [HubPublishCallback(
        section["repo_id"], output_dir=context.output_dir, steps=section.get("steps"),
        every_steps=section.get("every_steps"), tags=section.get("tags"), final=section.get("final", True),
        retries=int(section.get("retries", 3)), backoff_s=float(section.get("backoff_s", 2.0)),
        final_timeout_s=float(section.get("final_timeout_s", 1800)), card_options=card, **options)]


__all__ = ["build_publish_callbacks"]
