"""The muP coordinate check: train the same model at several widths for a few steps and watch activation sizes.

Under muP every activation coordinate stays O(1) as the width grows, so the mean |activation| of the embeddings,
of every block's attention and MLP output and of the logits is flat across widths at every step; under the
standard parametrization (SP) the same quantities grow with width once training moves the weights (Yang et al.,
"Tensor Programs V", arXiv 2203.03466, section 7.1). Here both parametrizations are built from one family's `tiny`
preset shape, differing only where muP differs:

- muP: base width = the smallest width, BTLM's multipliers (embeddings x14.6, logits x2.22 / m, scores / d), the
  muP init of `mup_smallllm.py` and the per-group learning rates of `mup_param_groups`;
- SP: the same widths, depth, heads, data, seed and base init std (BTLM's 0.073, untruncated, not width-scaled), no
  multipliers, scores / sqrt(d), one global learning rate.

Widths grow at a fixed number of heads, so head_dim grows with width and the 1/d attention scale matters; the MLP
width is BTLM's ratio 682.6 / 256 of the hidden width. Text is the bundled Shakespeare, one token per byte
(vocabulary 256), so nothing depends on a tokenizer.

The same building blocks (`width_config`, `byte_windows`, `train_steps`) drive the learning-rate transfer benchmark
(`benchmarks/mup_transfer.py`).
"""

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..families import FAMILIES, family_of, preset_config
from ..models.configuration_smallllm import SmallLLMConfig
from ..resources import corpus_path
from ..runfiles import atomic_path

PARAMETRIZATIONS = ("mup", "sp")
BYTE_VOCAB_SIZE = 256
# BTLM's published muP values (docs/architectures.md 1.2/1.4): MLP width / hidden width = 682.6 / 256 = 6826 / 2560.
BTLM_FFN_RATIO = 682.6 / 256
BTLM_INIT_STD = 0.073
BTLM_EMBEDDINGS_SCALE = 14.6
BTLM_OUTPUT_ALPHA = 2.22
# The Cerebras recipe's AdamW (docs/architectures.md 1.2).
ADAM_BETAS = (0.9, 0.95)
ADAM_EPS = 1e-8
DEFAULT_TEXT = "en_shakespeare.txt"


# ------------------------------------------------------------------------------------------------- models
def width_config(
    width: int,
    parametrization: str = "mup",
    *,
    family: str = "btlm",
    base_width: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    init_std: float = BTLM_INIT_STD,
    embeddings_scale: float = BTLM_EMBEDDINGS_SCALE,
    output_alpha: float = BTLM_OUTPUT_ALPHA,
    max_position_embeddings: int = 512,
) -> SmallLLMConfig:
    """`family`'s tiny-preset model at hidden size `width` over a byte vocabulary, in the muP or SP parametrization
    (see the module docstring). The MLP width is `round(width * 682.6 / 256)`; the muP base MLP width is
    `base_width * 682.6 / 256`, so at `width == base_width` both multipliers are 1."""
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"parametrization={parametrization!r}; choose one of {PARAMETRIZATIONS}.")
    if width % num_heads or (width // num_heads) % 2:
        raise ValueError(f"width={width} must split into num_heads={num_heads} heads of an even size.")
    if not base_width > 0:
        raise ValueError(f"base_width={base_width!r} must be positive.")
    tiny = preset_config(family, "tiny")
    kv_heads = tiny.num_key_value_heads if num_heads % tiny.num_key_value_heads == 0 else num_heads
    fields = dict(
        vocab_size=BYTE_VOCAB_SIZE, hidden_size=width, intermediate_size=round(width * BTLM_FFN_RATIO),
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=kv_heads,
        head_dim=width // num_heads, max_position_embeddings=max_position_embeddings, initializer_range=init_std,
    )
    if parametrization == "mup":
        fields.update(mup_base_hidden_size=float(base_width), mup_base_intermediate_size=base_width * BTLM_FFN_RATIO,
                      mup_embeddings_scale=embeddings_scale, mup_output_alpha=output_alpha, mup_scale_qk_dot_by_d=True)
    else:
        fields.update(mup_base_hidden_size=None, mup_base_intermediate_size=None, mup_embeddings_scale=1.0,
                      mup_output_alpha=1.0, mup_scale_qk_dot_by_d=False)
    return preset_config(family, "tiny", **fields)


def build_model(config: SmallLLMConfig, seed: int) -> torch.nn.Module:
    """A freshly initialised causal LM of `config`'s family (muP init when the config uses muP), in train mode."""
    torch.manual_seed(seed)
    return FAMILIES[family_of(config)].causal_lm_class(config).train()


def build_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW (the Cerebras recipe's betas and eps, no weight decay): muP groups for a muP model, one global lr
    otherwise."""
    if model.config.uses_mup:
        params = model.get_mup_param_groups(lr, weight_decay=0.0)
    else:
        params = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr, "weight_decay": 0.0}]
    return torch.optim.AdamW(params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=0.0)


# ------------------------------------------------------------------------------------------------- data
def byte_windows(
    num_batches: int, batch_size: int, seq_len: int, seed: int = 0, text: str = DEFAULT_TEXT
) -> list[torch.Tensor]:
    """`num_batches` batches [batch_size, seq_len] of byte ids cut at random offsets (fixed by `seed`) from a bundled
    corpus file (`text`, e.g. "en_shakespeare.txt" or "validation/en_shakespeare.txt")."""
    data = torch.frombuffer(bytearray(corpus_path(text).read_bytes()), dtype=torch.uint8).long()
    if data.numel() <= seq_len:
        raise ValueError(f"{text} has {data.numel()} bytes, fewer than seq_len={seq_len}.")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, data.numel() - seq_len, (num_batches, batch_size), generator=generator)
    offsets = torch.arange(seq_len)
    return [data[row[:, None] + offsets] for row in starts]


# ------------------------------------------------------------------------------------------------- training
class CoordinateRecorder:
    """Forward hooks that record the mean |activation| of the embeddings (after the embedding multiplier), every
    block's attention and MLP output, and the logits (after the logit multiplier) of one forward pass."""

    def __init__(self, model: torch.nn.Module):
        self.values: dict[str, float] = {}
        self._handles = []
        decoder = model.model
        # The embedding multiplier is applied after `embed_tokens`; the first layer's input is what the blocks see.
        self._handles.append(decoder.layers[0].register_forward_pre_hook(self._record_input("embeddings")))
        for index, layer in enumerate(decoder.layers):
            self._handles.append(layer.self_attn.register_forward_hook(self._record_output(f"layer{index}.attention")))
            self._handles.append(layer.mlp.register_forward_hook(self._record_output(f"layer{index}.mlp")))

    def _record_input(self, name):
        def hook(module, args, kwargs=None):
            self.values[name] = mean_abs(args[0])
        return hook

    def _record_output(self, name):
        def hook(module, args, output):
            self.values[name] = mean_abs(output[0] if isinstance(output, tuple) else output)
        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def mean_abs(tensor: torch.Tensor) -> float:
    return tensor.detach().float().abs().mean().item()


def train_steps(
    model: torch.nn.Module,
    batches: Iterable[torch.Tensor],
    lr: float,
    record_coordinates: bool = False,
    lr_lambda: Callable[[int], float] | None = None,
) -> dict:
    """Train `model` one AdamW step per batch (next-byte loss); returns `losses` (per step, before its update) and,
    with `record_coordinates`, `coordinates`: per step, the mean |activation| of each quantity in that step's
    forward pass (step 1 is the initial model). `lr_lambda(step)` multiplies every group's lr (torch's LambdaLR), so
    the muP ratios between groups hold throughout. A loss that turns non-finite ends the run early (`diverged`)."""
    optimizer = build_optimizer(model, lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda) if lr_lambda is not None else None
    recorder = CoordinateRecorder(model) if record_coordinates else None
    losses, coordinates, diverged = [], [], False
    try:
        for batch in batches:
            output = model(input_ids=batch, labels=batch)
            if recorder is not None:
                coordinates.append({**recorder.values, "logits": mean_abs(output.logits)})
            loss = output.loss
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                diverged = True
                break
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
    finally:
        if recorder is not None:
            recorder.remove()
    return {"losses": losses, "coordinates": coordinates, "diverged": diverged}


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, batches: Sequence[torch.Tensor]) -> float:
    """Mean next-byte loss of `model` over `batches` (eval mode, restored afterwards)."""
    was_training = model.training
    model.eval()
    try:
        return sum(model(input_ids=batch, labels=batch).loss.item() for batch in batches) / len(batches)
    finally:
        model.train(was_training)


# ------------------------------------------------------------------------------------------------- the check
@dataclass
class CoordCheckResult:
    """Mean |activation| per (parametrization, width, step, quantity), averaged over seeds, and the settings."""

    widths: list[int]
    steps: int
    settings: dict
    # records[parametrization][quantity][step index][width index]
    records: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)

    @property
    def quantities(self) -> list[str]:
        first = next(iter(self.records.values()))
        return list(first)

    def growth_ratios(self, step: int | None = None) -> dict[str, dict[str, float]]:
        """Per parametrization and quantity: value at the largest width / value at the smallest width, at `step`
        (1-based; default the last step)."""
        index = (step or self.steps) - 1
        return {
            parametrization: {name: values[index][-1] / values[index][0] for name, values in quantities.items()}
            for parametrization, quantities in self.records.items()
        }

    def max_growth(self, parametrization: str, step: int | None = None) -> float:
        """The largest growth ratio over all quantities: one number that is ~1 under muP and ~width ratio under SP."""
        return max(self.growth_ratios(step)[parametrization].values())

    def to_markdown(self) -> str:
        """One table per parametrization: rows = quantities at the last step, columns = widths, plus growth."""
        lines = []
        ratios = self.growth_ratios()
        for parametrization, quantities in self.records.items():
            lines.append(f"**{parametrization}** (mean |activation| at step {self.steps})\n")
            header = "| quantity | " + " | ".join(f"width {w}" for w in self.widths) + " | growth |"
            lines += [header, "|---" * (len(self.widths) + 2) + "|"]
            for name, values in quantities.items():
                cells = " | ".join(f"{v:.3g}" for v in values[-1])
                lines.append(f"| {name} | {cells} | {ratios[parametrization][name]:.2f}x |")
            lines.append("")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {**asdict(self), "growth_ratios": self.growth_ratios()}

    def plot(self, path: Path) -> None:
        """PNG: one row per parametrization, one column per quantity; x = width (log2), y = mean |activation|
        (log), one line per step (lighter = earlier)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = self.quantities
        rows = list(self.records)
        fig, axes = plt.subplots(len(rows), len(names), figsize=(2.4 * len(names), 2.4 * len(rows)),
                                 squeeze=False, sharex=True)
        colors = plt.cm.viridis([i / max(1, self.steps - 1) for i in range(self.steps)])
        for r, parametrization in enumerate(rows):
            for c, name in enumerate(names):
                ax = axes[r][c]
                for step, values in enumerate(self.records[parametrization][name]):
                    ax.plot(self.widths, values, marker=".", color=colors[step], label=f"step {step + 1}")
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_title(f"{parametrization}: {name}", fontsize=8)
                ax.tick_params(labelsize=6)
                if r == len(rows) - 1:
                    ax.set_xlabel("width", fontsize=7)
        axes[0][0].legend(fontsize=5)
        fig.suptitle("coordinate check: mean |activation| vs width", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def save(self, output_dir: str | Path) -> dict[str, Path]:
        """Write coord_check.json, coord_check.md and coord_check.png into `output_dir`, each through a temporary
        file renamed into place, so a failure leaves earlier outputs intact."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        paths = {kind: output_dir / f"coord_check.{kind}" for kind in ("json", "md", "png")}
        writers = {
            "json": lambda p: p.write_text(json.dumps(self.to_json(), indent=2) + "\n"),
            "md": lambda p: p.write_text(self.to_markdown()),
            "png": self.plot,
        }
        for kind, path in paths.items():
            with atomic_path(path) as temporary:
                writers[kind](temporary)
        return paths


def coord_check(
    widths: Sequence[int] = (64, 128, 256, 512),
    steps: int = 5,
    *,
    parametrizations: Sequence[str] = PARAMETRIZATIONS,
    lr: float = 1e-2,
    seeds: Sequence[int] = (0,),
    batch_size: int = 8,
    seq_len: int = 64,
    family: str = "btlm",
    num_layers: int = 2,
    num_heads: int = 4,
    progress: bool = True,
) -> CoordCheckResult:
    """Train every width under every parametrization for `steps` AdamW steps at `lr` (muP: the base lr of the
    groups; SP: the global lr) on the same byte windows, and average the recorded coordinates over `seeds`. The muP
    base width is the smallest width."""
    widths = sorted(int(w) for w in widths)
    if len(widths) < 2:
        raise ValueError(f"widths={widths}: a coordinate check needs at least two widths.")
    if steps < 1 or not seeds:
        raise ValueError(f"steps={steps} must be >= 1 and seeds={list(seeds)} not empty.")
    for parametrization in parametrizations:
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization={parametrization!r}; choose from {PARAMETRIZATIONS}.")
    settings = dict(lr=lr, seeds=list(seeds), batch_size=batch_size, seq_len=seq_len, family=family,
                    num_layers=num_layers, num_heads=num_heads, base_width=widths[0], text=DEFAULT_TEXT)
    result = CoordCheckResult(widths=widths, steps=steps, settings=settings)
    runs = [(p, w, s) for p in parametrizations for w in widths for s in seeds]
    sums: dict[str, dict[str, list[list[float]]]] = defaultdict(dict)
    for parametrization, width, seed in tqdm(runs, desc="coord check", disable=not progress):
        config = width_config(width, parametrization, family=family, base_width=widths[0], num_layers=num_layers,
                              num_heads=num_heads, max_position_embeddings=max(seq_len, 8))
        batches = byte_windows(steps, batch_size, seq_len, seed=seed)
        run = train_steps(build_model(config, seed), batches, lr, record_coordinates=True)
        if run["diverged"]:
            raise RuntimeError(f"{parametrization} width {width} seed {seed} diverged at lr={lr}; lower the lr.")
        column = widths.index(width)
        for step, values in enumerate(run["coordinates"]):
            for name, value in values.items():
                table = sums[parametrization].setdefault(name, [[0.0] * len(widths) for _ in range(steps)])
                table[step][column] += value / len(seeds)
    result.records = {p: dict(sums[p]) for p in parametrizations}
    return result


__all__ = [
    "CoordCheckResult",
    "CoordinateRecorder",
    "build_model",
    "build_optimizer",
    "byte_windows",
    "coord_check",
    "evaluate_loss",
    "train_steps",
    "width_config",
]
