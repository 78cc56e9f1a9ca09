"""The shared configuration of every hf_smallllm architecture.

One config class holds every knob the five families differ in; a family is a subclass that only changes
defaults (see `configuration_<family>.py`). Derived quantities (head size, muP width multipliers, the logit and
attention scales) are properties computed from the stored fields, never stored twice. Every inconsistent
combination raises a `ValueError` naming the field, the value and what is allowed at construction time: types (a
bool field takes only True/False, numbers are never strings), ranges (token ids inside the vocabulary, positive
norm epsilon, RoPE theta and scaling factors, non-negative init std), known RoPE types (transformers'
`ROPE_INIT_FUNCTIONS`), and no RoPE settings on an ALiBi model, where they would be ignored.

This file ships to the Hub as remote code: it imports only transformers and its siblings.
"""

import math
from typing import Any, ClassVar

from transformers.activations import ACT2FN
from transformers.configuration_utils import PreTrainedConfig
from transformers.utils import logging

logger = logging.get_logger(__name__)

POSITION_EMBEDDING_TYPES = ("rope", "alibi")
NORM_TYPES = ("rmsnorm", "layernorm")
ROPE_LAYOUTS = ("half", "interleaved")
# "normal": N(0, initializer_range) everywhere; "lit_gpt": TinyLlama's pretraining init (see `init_smallllm.py`)
INIT_SCHEMES = ("normal", "lit_gpt")
CHOICE_FIELDS = {"norm_type": NORM_TYPES, "position_embedding_type": POSITION_EMBEDDING_TYPES,
                 "rope_layout": ROPE_LAYOUTS, "init_scheme": INIT_SCHEMES}
BOOL_FIELDS = ("attention_bias", "attention_out_bias", "mlp_bias", "tie_word_embeddings", "use_cache",
               "mup_scale_qk_dot_by_d")
# Keyword arguments transformers folds into `rope_parameters`.
ROPE_ARGUMENTS = ("rope_theta", "rope_scaling", "partial_rotary_factor")
# Fields of a rope dict where 0 is meaningful (YaRN's attention factor and beta corrections, DeepSeek's mscale).
NON_NEGATIVE_ROPE_FIELDS = ("attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate")


class SmallLLMConfig(PreTrainedConfig):
    r"""
    Configuration of an hf_smallllm decoder-only transformer (pre-norm, gated MLP, RoPE or ALiBi).

    The defaults describe TinyLlama-1.1B; family subclasses override them with their published values.

    Args:
        vocab_size: rows of the token embedding (and of the output head).
        hidden_size: width of the residual stream.
        intermediate_size: width of each branch of the gated MLP (gate and up projections).
        num_hidden_layers: number of decoder blocks.
        num_attention_heads: query heads.
        num_key_value_heads: key/value heads; fewer than `num_attention_heads` means grouped-query attention.
            Defaults to `num_attention_heads` (multi-head attention).
        head_dim: size of one head. Defaults to `hidden_size // num_attention_heads`.
        hidden_act: activation applied to the gate branch of the MLP (`"silu"` gives SwiGLU).
        max_position_embeddings: context length the model was trained for.
        initializer_range: standard deviation of the normal initialisation (the muP base std when muP is on).
        init_scheme: `"normal"` (N(0, `initializer_range`) for every weight) or `"lit_gpt"` (TinyLlama's
            pretraining init: sqrt(2 / (5 d)), residual-stream outputs 1 / (sqrt(d) L); see `init_smallllm.py`).
            muP models use muP's init and accept only `"normal"` here.
        norm_type: `"rmsnorm"` (weight only) or `"layernorm"` (weight and bias).
        norm_eps: epsilon of every norm. Also readable as `rms_norm_eps`.
        position_embedding_type: `"rope"` (rotary, configured by `rope_parameters`) or `"alibi"` (linear biases).
        rope_parameters: transformers' RoPE dictionary (`rope_type`, `rope_theta`, `partial_rotary_factor`, scaling
            fields). `rope_theta`, `rope_scaling` and `partial_rotary_factor` keyword arguments are folded into it.
        rope_layout: which dimensions form a rotary pair: `"half"` (dimension i with i + d/2, Llama/NeoX) or
            `"interleaved"` (adjacent dimensions 2i and 2i+1, GPT-J/ChatGLM).
        alibi_scaling: ALiBi position interpolation, `{"type": "linear", "factor": f > 1}` (fixed) or
            `{"type": "linear", "train_seq_len": n > 1}` (dynamic: slopes divided by `kv_length / n` beyond `n`).
        attention_bias: bias on the query, key and value projections.
        attention_out_bias: bias on the attention output projection.
        mlp_bias: biases on the three MLP projections.
        attention_dropout: dropout on attention probabilities (training only).
        tie_word_embeddings: share the input embedding with the output head.
        mup_base_hidden_size: width of the muP base (proxy) model; `None` disables muP width scaling.
        mup_base_intermediate_size: MLP width of the muP base model (defaults to scaling like the hidden size).
        mup_embeddings_scale: multiplier applied to the token embeddings.
        mup_output_alpha: output logits are multiplied by `mup_output_alpha / width_multiplier`.
        mup_scale_qk_dot_by_d: scale attention scores by `1 / head_dim` (muP) instead of `1 / sqrt(head_dim)`.
        loss_chunk_size: when set, a forward with `labels` computes the loss over chunks of this many tokens
            without holding the [tokens, vocab] logits whole, and returns `logits=None` (see `loss_smallllm.py`).
    """

    model_type = "smallllm"
    # `model_type` strings of the family's official (remote-code) config.json; such files are read as this class.
    official_model_types: ClassVar[tuple[str, ...]] = ()
    attribute_map = {"rms_norm_eps": "norm_eps"}
    # `partial_rotary_factor` lives inside `rope_parameters`; transformers' validator would otherwise warn about it.
    ignore_keys_at_rope_validation = {"partial_rotary_factor"}
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    vocab_size: int = 32000
    hidden_size: int = 2048
    intermediate_size: int = 5632
    num_hidden_layers: int = 22
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    init_scheme: str = "normal"
    norm_type: str = "rmsnorm"
    norm_eps: float = 1e-5
    position_embedding_type: str = "rope"
    rope_parameters: dict | None = None
    rope_layout: str = "half"
    alibi_scaling: dict | None = None
    attention_bias: bool = False
    attention_out_bias: bool = False
    mlp_bias: bool = False
    attention_dropout: float = 0.0
    tie_word_embeddings: bool = False
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    mup_base_hidden_size: float | None = None
    mup_base_intermediate_size: float | None = None
    mup_embeddings_scale: float = 1.0
    mup_output_alpha: float = 1.0
    mup_scale_qk_dot_by_d: bool = False
    loss_chunk_size: int | None = None

    def __post_init__(self, **kwargs: Any):
        # RoPE arguments are folded into `rope_parameters` by the parent: check what it would crash on, and RoPE
        # settings given to an ALiBi model (which would be dropped silently), while they are still as given.
        self._validate_rope_arguments(kwargs)
        # Aliases such as BTLM's `n_head` or GEB's `kv_channels` are set by the parent, so derive defaults after it.
        super().__post_init__(**kwargs)
        head_dim_given = self.head_dim is not None
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        self._validate_sizes(head_dim_given)
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        self._validate_scalars()
        self._validate_token_ids()
        self._validate_positions()
        self._validate_mup()
        if self.init_scheme != "normal" and self.uses_mup:
            raise ValueError(f"init_scheme={self.init_scheme!r} cannot be combined with muP (mup_base_hidden_size="
                             f"{self.mup_base_hidden_size}): muP models use muP's width-scaled init; set "
                             "init_scheme='normal' or turn muP off.")

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        return cls._without_official_code(config_dict), kwargs

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs):
        # `AutoConfig` reads config.json itself and hands the dict here (official `model_type`s are registered).
        return super().from_dict(cls._without_official_code(config_dict), **kwargs)

    @classmethod
    def _without_official_code(cls, config_dict: dict[str, Any]) -> dict[str, Any]:
        """An official config.json without what points at its repository's code: keeping `auto_map` would send the
        Auto classes to code we do not ship. The family subclass translates the remaining official field names in
        `__post_init__`."""
        model_type = config_dict.get("model_type")
        if model_type not in cls.official_model_types:
            return config_dict
        if "auto_map" in config_dict:
            logger.warning_once(
                f"config.json of model_type {model_type!r} is read as hf_smallllm's {cls.__name__}: the model runs on "
                "the package's classes and the repository's own code (its auto_map) is not run, whatever "
                "trust_remote_code says (docs/loading.md).")
        return {k: v for k, v in config_dict.items() if k not in ("model_type", "auto_map", "architectures")}

    # ---------------------------------------------------------------- validation
    def _validate_rope_arguments(self, kwargs: dict) -> None:
        given = {name: kwargs[name] for name in ROPE_ARGUMENTS if kwargs.get(name) is not None}
        if self.rope_parameters is not None:
            given["rope_parameters"] = self.rope_parameters
        for name in ("rope_parameters", "rope_scaling"):
            if name in given and not isinstance(given[name], dict):
                raise ValueError(f"{name}={given[name]!r} must be a dict such as {{'rope_type': 'linear', "
                                 "'factor': 2.0}.")
        if self.position_embedding_type == "alibi" and given:
            raise ValueError(
                f"{', '.join(f'{k}={v!r}' for k, v in given.items())}: RoPE settings on a model with "
                "position_embedding_type='alibi' would be ignored; remove them (extend an ALiBi model with "
                "alibi_scaling)."
            )

    def _validate_scalars(self) -> None:
        """Types and ranges of the scalar fields, so that `"no"`, `"1e-5"` or `-0.02` fail here, naming the field,
        not as a silent wrong model or a TypeError deep in the first forward."""
        for name in BOOL_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, bool):
                # a ValueError like every other config mistake (callers catch one type, the CLI prints one line)
                raise ValueError(  # noqa: TRY004
                    f"{name}={value!r} must be True or False (a bool, not {type(value).__name__}).")
        for name, choices in CHOICE_FIELDS.items():
            value = getattr(self, name)
            if not isinstance(value, str) or value not in choices:
                raise ValueError(f"{name}={value!r} is not supported; choose one of {choices}.")
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not a known activation (see transformers ACT2FN).")
        _check_number("norm_eps", self.norm_eps, "a positive number (e.g. 1e-5)", lambda v: v > 0)
        _check_number("initializer_range", self.initializer_range, "a number >= 0", lambda v: v >= 0)
        _check_number("attention_dropout", self.attention_dropout, "a number in [0, 1)", lambda v: 0.0 <= v < 1.0)
        if self.loss_chunk_size is not None and (
            not isinstance(self.loss_chunk_size, int) or isinstance(self.loss_chunk_size, bool)
            or self.loss_chunk_size < 1
        ):
            raise ValueError(f"loss_chunk_size={self.loss_chunk_size!r} must be a positive number of tokens or None.")

    def _validate_token_ids(self) -> None:
        """Ids must be non-negative integers. One at or beyond `vocab_size` only warns: transformers' own contract
        (and its model tests) shrink `vocab_size` for tiny models and keep a family's default special ids, which
        matter only where a token is generated or packed."""
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name, None)
            if value is None:
                continue
            ids = value if isinstance(value, list) and name == "eos_token_id" else [value]
            if not ids or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in ids):
                allowed = "an integer or a non-empty list of integers" if name == "eos_token_id" else "an integer"
                raise ValueError(f"{name}={value!r} must be {allowed} >= 0 (in [0, vocab_size={self.vocab_size})) "
                                 "or None.")
            if any(i >= self.vocab_size for i in ids):
                logger.warning("%s=%r is not below vocab_size=%d: a model with this config cannot emit or embed that "
                               "token", name, value, self.vocab_size)

    def _validate_sizes(self, head_dim_given: bool) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive integer.")
        kv_heads = self.num_key_value_heads
        if not isinstance(kv_heads, int) or isinstance(kv_heads, bool) or kv_heads <= 0:
            raise ValueError(f"num_key_value_heads={kv_heads!r} must be a positive integer.")
        if head_dim_given and (
            not isinstance(self.head_dim, int) or isinstance(self.head_dim, bool) or self.head_dim <= 0
        ):
            raise ValueError(f"head_dim={self.head_dim!r} must be a positive integer.")
        if not head_dim_given and self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}; "
                "change one of them or set head_dim explicitly."
            )
        if self.num_attention_heads % kv_heads != 0:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not divisible by "
                f"num_key_value_heads={self.num_key_value_heads}: every key/value head must serve the same number "
                f"of query heads (set num_key_value_heads to a divisor of {self.num_attention_heads}; "
                f"{type(self).__name__} defaults it to {type(self).num_key_value_heads})."
            )

    def _validate_positions(self) -> None:
        if self.position_embedding_type == "alibi":
            if self.rope_layout != "half":
                raise ValueError(f"rope_layout={self.rope_layout!r} is a RoPE setting; a model with "
                                 "position_embedding_type='alibi' has no rotary pairs (leave it 'half').")
            # ALiBi has no rotary parameters; transformers fills in a default dict that would only mislead readers.
            self.rope_parameters = None
            if self.alibi_scaling is not None:
                validate_alibi_scaling(self.alibi_scaling)
        else:
            if self.alibi_scaling is not None:
                raise ValueError("alibi_scaling is only valid with position_embedding_type='alibi'.")
            validate_rope_parameters(self.rope_parameters)
            factor = self.rope_settings.get("partial_rotary_factor", 1.0)
            if not 0.0 < factor <= 1.0:
                raise ValueError(f"partial_rotary_factor={factor} must be in (0, 1].")
            if int(self.head_dim * factor) % 2 != 0:
                raise ValueError(
                    f"the rotary dimension head_dim * partial_rotary_factor = {self.head_dim} * {factor} must be even."
                )
            try:
                self.validate_rope()
            except KeyError as err:  # transformers reports missing rope fields as KeyError
                raise ValueError(f"invalid rope_parameters {self.rope_parameters}: {err}") from err

    def _validate_mup(self) -> None:
        for name in ("mup_base_hidden_size", "mup_base_intermediate_size"):
            value = getattr(self, name)
            if value is not None:
                _check_number(name, value, "a positive width or None", lambda v: v > 0)
        _check_number("mup_embeddings_scale", self.mup_embeddings_scale, "a positive multiplier", lambda v: v > 0)
        _check_number("mup_output_alpha", self.mup_output_alpha, "a positive multiplier", lambda v: v > 0)
        if self.mup_base_hidden_size is None:
            if self.mup_base_intermediate_size is not None:
                raise ValueError("mup_base_intermediate_size needs mup_base_hidden_size (the muP base width).")
            # Half a muP model (multipliers without the width scaling of init and learning rates) trains badly and
            # silently; the multipliers are only meaningful next to a base width.
            partial = [f"{name}={getattr(self, name)!r}" for name, off in
                       (("mup_embeddings_scale", 1.0), ("mup_output_alpha", 1.0), ("mup_scale_qk_dot_by_d", False))
                       if getattr(self, name) != off]
            if partial:
                raise ValueError(
                    f"{', '.join(partial)} needs mup_base_hidden_size (the muP base width; the output multiplier is "
                    "alpha / (hidden_size / mup_base_hidden_size)): set it, or turn muP off completely with "
                    "mup_embeddings_scale=1.0, mup_output_alpha=1.0, mup_scale_qk_dot_by_d=False."
                )

    # ---------------------------------------------------------------- derived values
    @property
    def mup_width_multiplier(self) -> float:
        """hidden_size / mup_base_hidden_size (1.0 without muP)."""
        return self.hidden_size / self.mup_base_hidden_size if self.mup_base_hidden_size else 1.0

    @property
    def mup_ffn_multiplier(self) -> float:
        """intermediate_size / mup_base_intermediate_size (the width multiplier when no MLP base is given)."""
        if self.mup_base_intermediate_size:
            return self.intermediate_size / self.mup_base_intermediate_size
        return self.mup_width_multiplier

    @property
    def uses_mup(self) -> bool:
        return self.mup_base_hidden_size is not None

    @property
    def output_logits_multiplier(self) -> float:
        """Factor on the output logits: mup_output_alpha / width multiplier (BTLM: 2.22 / 10 = 0.222)."""
        return self.mup_output_alpha / self.mup_width_multiplier

    @property
    def logit_scale(self) -> float:
        """`output_logits_multiplier` under the name tools outside transformers read to scale logits computed from
        `lm_head` themselves (TRL's fused LM head, which computes the log-probabilities of SFT and DPO)."""
        return self.output_logits_multiplier

    @property
    def attention_scaling(self) -> float:
        """Softmax scale of the attention scores: 1/d with muP's `scale_qk_dot_by_d`, else 1/sqrt(d)."""
        head_dim = self.resolved_head_dim
        return 1.0 / head_dim if self.mup_scale_qk_dot_by_d else 1.0 / math.sqrt(head_dim)

    @property
    def rotary_dim(self) -> int:
        """Number of dimensions of each head that RoPE rotates (0 for ALiBi)."""
        if self.position_embedding_type != "rope":
            return 0
        return int(self.resolved_head_dim * self.rope_settings.get("partial_rotary_factor", 1.0))

    @property
    def resolved_head_dim(self) -> int:
        """`head_dim` once `__post_init__` has derived it (typed `int`, where the field also admits None, unset)."""
        if self.head_dim is None:
            raise ValueError("head_dim is unset: SmallLLMConfig.__post_init__ derives it from hidden_size")
        return self.head_dim

    @property
    def rope_settings(self) -> dict:
        """`rope_parameters` of a RoPE model (an ALiBi config has none; asking for them is a ValueError)."""
        if self.rope_parameters is None:
            raise ValueError(f"position_embedding_type={self.position_embedding_type!r} has no rope_parameters")
        return self.rope_parameters


def _check_number(name: str, value: Any, allowed: str, ok) -> None:
    """A real, finite number (not a bool or a string of digits) for which `ok(value)` holds, else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise ValueError(f"{name}={value!r} must be {allowed}.")


def validate_rope_parameters(parameters: Any) -> None:
    """A rope dict transformers can build: a known `rope_type`, a positive `rope_theta`, and positive (or, for
    attention and beta corrections, non-negative) finite numbers for the scaling fields."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    if not isinstance(parameters, dict):
        raise ValueError(f"rope_parameters={parameters!r} must be a dict.")  # noqa: TRY004 - see _validate_scalars
    rope_type = parameters.get("rope_type", "default")
    known = ("default", *sorted(ROPE_INIT_FUNCTIONS))
    if rope_type not in known:
        raise ValueError(f"rope_parameters['rope_type']={rope_type!r} is not a RoPE type transformers knows; "
                         f"choose one of {known}.")
    for key, value in parameters.items():
        if key in ("rope_type", "type"):
            continue
        name = "rope_theta" if key == "rope_theta" else f"rope_parameters[{key!r}]"
        if key in ("short_factor", "long_factor"):  # longrope: one factor per rotary frequency
            if not isinstance(value, list) or not value:
                raise ValueError(f"{name}={value!r} must be a non-empty list of positive numbers.")
            for item in value:
                _check_number(name, item, "a list of positive numbers", lambda v: v > 0)
        elif key in NON_NEGATIVE_ROPE_FIELDS:
            if value is not None:
                _check_number(name, value, "a number >= 0 or None", lambda v: v >= 0)
        else:
            _check_number(name, value, "a positive number", lambda v: v > 0)


def validate_alibi_scaling(alibi_scaling: Any) -> None:
    """Check `alibi_scaling` the way BTLM's published config class does: exactly one of `factor` or `train_seq_len`."""
    if not isinstance(alibi_scaling, dict) or len(alibi_scaling) != 2 or alibi_scaling.get("type") != "linear":
        raise ValueError(
            f"alibi_scaling={alibi_scaling!r} must be a dict with two fields: {{'type': 'linear', 'factor': f}} "
            "with f > 1, or {'type': 'linear', 'train_seq_len': n} with n > 1."
        )
    if "factor" in alibi_scaling:
        factor = alibi_scaling["factor"]
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 1.0:
            raise ValueError(f"alibi_scaling['factor']={factor!r} must be a number greater than 1.")
    elif "train_seq_len" in alibi_scaling:
        train_seq_len = alibi_scaling["train_seq_len"]
        if isinstance(train_seq_len, bool) or not isinstance(train_seq_len, int) or train_seq_len <= 1:
            raise ValueError(f"alibi_scaling['train_seq_len']={train_seq_len!r} must be an integer greater than 1.")
    else:
        raise ValueError(f"alibi_scaling={alibi_scaling!r} needs either 'factor' or 'train_seq_len'.")


__all__ = ["SmallLLMConfig", "validate_alibi_scaling", "validate_rope_parameters"]
