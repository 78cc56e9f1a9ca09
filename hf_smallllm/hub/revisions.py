"""Snapshot revisions: what a training checkpoint is called on the Hub, and back.

Fully open models publish each intermediate checkpoint as its own branch: OLMo names them `step{N}-tokens{T}B`
(the default here), TinyLlama `step-{N/1000}k-token-{T}B`. A `BranchTemplate` formats a snapshot's step and tokens
into such a name and parses a name back, so listing a repo recovers (step, tokens) from its branches. Step and
tokens of a checkpoint come from its `trainer_state.json` (`global_step`, `num_input_tokens_seen`), the
checkpoint convention of `hf_smallllm.train.checkpointer`.

Template fields: `{step}` (optimizer steps), `{step_k}` (steps / 1000), `{tokens}` (billions of tokens seen),
`{tokens_m}` (millions), `{tokens_raw}` (exact count). Billions and millions are whole numbers from 1 up (as OLMo
writes them) and three significant digits below 1 (tiny runs), so a name never claims more precision than it has.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from ..errors import UsageFileNotFoundError
from ..families import FAMILIES
from ..runfiles import TRAINER_STATE_NAME, list_checkpoints

# Named templates: OLMo's, and every family that names its own snapshots (its record's `branch_template`).
BRANCH_TEMPLATES = {
    "olmo": "step{step}-tokens{tokens}B",
    **{name: family.branch_template for name, family in FAMILIES.items() if family.branch_template},
}
DEFAULT_BRANCH_TEMPLATE = "olmo"

_FIELD_PATTERNS = {
    "step": r"(?P<step>\d+)",
    "step_k": r"(?P<step_k>\d+(?:\.\d+)?)",
    "tokens": r"(?P<tokens>\d+(?:\.\d+)?)",
    "tokens_m": r"(?P<tokens_m>\d+(?:\.\d+)?)",
    "tokens_raw": r"(?P<tokens_raw>\d+)",
}
# git ref rules that matter for names we generate: no spaces, no "..", no control characters, no ~^:?*[\
_BAD_REF = re.compile(r"[\s~^:?*\[\\]|\.\.|^/|/$|\.lock$|@\{|^-")


@dataclass(frozen=True)
class Snapshot:
    """One training checkpoint: its optimizer step, training tokens seen, and (locally) its folder."""

    step: int
    tokens: int
    path: Path | None = None


def _scaled(value: float) -> str:
    """Whole numbers from 1 up, three significant digits below."""
    if value >= 1:
        return str(int(round(value)))
    if value == 0:
        return "0"
    return format(Decimal(f"{value:.3g}"), "f")  # 0.0000205, not 2.05e-05: names stay plain decimals


def _step_k(step: int) -> str:
    return str(step // 1000) if step % 1000 == 0 else f"{step / 1000:g}"


def validate_ref_name(name: str, what: str = "branch") -> str:
    if not name or _BAD_REF.search(name) or name in ("main", "HEAD"):
        raise ValueError(f"{name!r} is not a usable {what} name (git ref rules, and not main/HEAD)")
    return name


class BranchTemplate:
    """Formats snapshots into branch names and parses branch names back into (step, tokens)."""

    def __init__(self, template: str = DEFAULT_BRANCH_TEMPLATE):
        self.template = BRANCH_TEMPLATES.get(template, template)
        fields = [f for _, f, _, _ in string.Formatter().parse(self.template) if f is not None]
        unknown = sorted(set(fields) - set(_FIELD_PATTERNS))
        if unknown:
            raise ValueError(f"branch template {self.template!r} uses unknown fields {unknown}; "
                             f"known: {', '.join('{' + f + '}' for f in _FIELD_PATTERNS)}")
        if "step" not in fields and "step_k" not in fields:
            raise ValueError(f"branch template {self.template!r} needs {{step}} or {{step_k}}, otherwise two "
                             f"snapshots could get the same branch")
        if len(fields) != len(set(fields)):
            raise ValueError(f"branch template {self.template!r} uses a field twice")
        pattern = ""
        for literal, field_name, _, _ in string.Formatter().parse(self.template):
            pattern += re.escape(literal)
            if field_name is not None:
                pattern += _FIELD_PATTERNS[field_name]
        self._regex = re.compile(f"^{pattern}$")

    def format(self, snapshot: Snapshot) -> str:
        name = self.template.format(step=snapshot.step, step_k=_step_k(snapshot.step),
                                    tokens=_scaled(snapshot.tokens / 1e9), tokens_m=_scaled(snapshot.tokens / 1e6),
                                    tokens_raw=snapshot.tokens)
        return validate_ref_name(name)

    def parse(self, name: str) -> Snapshot | None:
        """(step, tokens) from a branch name, or None when the name does not follow the template. Tokens are as
        precise as the name (billions for the OLMo template); `step_k` gives steps to the nearest name digit."""
        match = self._regex.match(name)
        if not match:
            return None
        groups = match.groupdict()
        step = int(groups["step"]) if "step" in groups else int(round(float(groups["step_k"]) * 1000))
        if "tokens_raw" in groups:
            tokens = int(groups["tokens_raw"])
        elif "tokens" in groups:
            tokens = int(round(float(groups["tokens"]) * 1e9))
        elif "tokens_m" in groups:
            tokens = int(round(float(groups["tokens_m"]) * 1e6))
        else:
            tokens = 0
        return Snapshot(step, tokens)

    def __repr__(self):
        return f"BranchTemplate({self.template!r})"


def snapshot_of_checkpoint(path: str | Path) -> Snapshot:
    """Step and tokens of a checkpoint folder from its `trainer_state.json`."""
    path = Path(path)
    if not path.is_dir():
        raise UsageFileNotFoundError(f"checkpoint folder {path} does not exist")
    state_path = path / TRAINER_STATE_NAME
    if not state_path.exists():
        raise UsageFileNotFoundError(f"{path} has no {TRAINER_STATE_NAME}: not a training checkpoint (it carries the "
                                     "step and tokens a snapshot is named after)")
    state = json.loads(state_path.read_text())
    if "global_step" not in state:
        raise ValueError(f"{state_path} has no global_step")
    return Snapshot(int(state["global_step"]), int(state.get("num_input_tokens_seen") or 0), path)


def run_snapshots(output_dir: str | Path) -> list[Snapshot]:
    """Every complete checkpoint of a run (`output_dir/checkpoint-<step>/`), oldest first."""
    return [snapshot_of_checkpoint(path) for _, path in list_checkpoints(output_dir)]


def select_snapshots(snapshots: list[Snapshot], steps: list[int] | None = None, every: int | None = None,
                     ) -> list[Snapshot]:
    """The snapshots to publish: those at `steps`, and/or every `every`-th step; all when neither is given.
    A requested step that has no checkpoint is an error (naming the ones that exist)."""
    if not steps and not every:
        return list(snapshots)
    by_step = {s.step: s for s in snapshots}
    missing = sorted(set(steps or []) - set(by_step))
    if missing:
        raise ValueError(f"no checkpoint for step(s) {missing}; the run has steps {sorted(by_step)}")
    chosen = set(steps or []) | {s.step for s in snapshots if every and s.step % every == 0}
    return [by_step[step] for step in sorted(chosen)]


__all__ = ["BRANCH_TEMPLATES", "BranchTemplate", "DEFAULT_BRANCH_TEMPLATE", "Snapshot", "run_snapshots",
           "select_snapshots", "snapshot_of_checkpoint", "validate_ref_name"]
