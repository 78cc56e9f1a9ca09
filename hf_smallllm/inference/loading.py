"""The one way the package's commands load a saved model and its tokenizer: any folder or Hub id that
`AutoModelForCausalLM` loads (this package's five families are registered first), in eval mode on a device, with
optional config overrides. A path that holds no model or tokenizer, or an override the config class rejects, is
the user's mistake and raises a `UsageError` naming the path or the override."""

from __future__ import annotations

import os

from ..errors import UsageFileNotFoundError, UsageValueError

MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16")  # "auto": the dtype the checkpoint was saved in


def default_device() -> str:
    """cuda when a GPU is visible, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(path: str | os.PathLike, *, revision: str | None = None):
    """The tokenizer of a folder or Hub id."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, **({"revision": revision} if revision else {}))
    except (OSError, ValueError) as err:  # transformers raises ValueError for a folder without tokenizer files
        raise UsageFileNotFoundError(f"cannot load a tokenizer from {str(path)!r}: {err}") from None


def load_config(path: str | os.PathLike, overrides: dict | None = None, *, revision: str | None = None):
    """The config of a folder or Hub id, rebuilt with `overrides` (not patched, so that the config class validates
    the overridden fields)."""
    from transformers import AutoConfig

    import hf_smallllm  # noqa: F401  (registers the families with the Auto classes)

    try:
        config = AutoConfig.from_pretrained(path, **({"revision": revision} if revision else {}))
    except OSError as err:
        raise UsageFileNotFoundError(f"cannot load a model config from {str(path)!r}: {err}") from None
    except ValueError as err:  # an unknown model_type
        raise UsageValueError(f"cannot load a model config from {str(path)!r}: {err}") from None
    if not overrides:
        return config
    values = {key: value for key, value in config.to_dict().items() if key != "model_type"}
    if "rope_theta" in overrides and values.get("rope_parameters"):  # a new base goes inside the rope dictionary
        values["rope_parameters"] = {**values["rope_parameters"], "rope_theta": overrides["rope_theta"]}
    try:
        return type(config)(**{**values, **overrides})
    except (ValueError, TypeError) as err:
        raise UsageValueError(f"config overrides {overrides} for {str(path)!r}: {err}") from None


def check_device(device: str | None, option: str = "--device") -> None:
    """A device torch can use on this machine, else a UsageValueError naming the option (None: the default)."""
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageValueError(f"{option} {device!r} is not a torch device; use cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageValueError(f"{option} {device}: torch sees no CUDA GPU on this machine (torch "
                                  f"{torch.__version__}); use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UsageValueError(f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageValueError(f"{option} {device}: MPS is not available on this machine; use --device cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise UsageValueError(f"{option} {device!r}: models run on cpu, cuda or mps")


def load_model(path: str | os.PathLike, *, dtype: str = "auto", device: str | None = None,
               config_overrides: dict | None = None, attn_implementation: str | None = None,
               revision: str | None = None):
    """A causal LM from a folder or Hub id, in eval mode on `device` (default: `default_device()`). `dtype` is one
    of MODEL_DTYPES; `config_overrides` change config fields at load time (see `load_config`)."""
    import torch
    from transformers import AutoModelForCausalLM

    import hf_smallllm  # noqa: F401  (registers the families with the Auto classes)

    if dtype not in MODEL_DTYPES:
        raise UsageValueError(f"dtype={dtype!r}; choose one of {', '.join(MODEL_DTYPES)}")
    check_device(device)  # before minutes of loading, not after
    # the config through load_config, so that an unreadable or invalid config.json is one error naming the folder
    kwargs = {"dtype": dtype if dtype == "auto" else getattr(torch, dtype),
              "config": load_config(path, config_overrides, revision=revision)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if revision:
        kwargs["revision"] = revision
    import pickle

    from safetensors import SafetensorError

    try:
        model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, **kwargs)
    except OSError as err:
        raise UsageFileNotFoundError(f"cannot load a model from {str(path)!r}: {err}") from None
    except (SafetensorError, pickle.UnpicklingError, EOFError) as err:  # truncated, garbage or refused pickles
        raise UsageValueError(f"cannot read the weights of {str(path)!r}: {type(err).__name__}: "
                              f"{' '.join(str(err).split())[:300]}") from None
    except RuntimeError as err:
        if "size mismatch" not in str(err) and "ignore_mismatched_sizes" not in str(err):
            raise
        raise UsageValueError(f"the weights of {str(path)!r} do not fit its config.json (a tensor has the wrong "
                              f"shape): {' '.join(str(err).split())[:300]}") from None
    # Our own formats must load whole: a missing tensor would be a silently random layer.
    if str(getattr(model.config, "model_type", "")).startswith("smallllm"):
        missing, unexpected = list(info.get("missing_keys", [])), list(info.get("unexpected_keys", []))
        if missing or unexpected:
            raise UsageValueError(f"the weights of {str(path)!r} do not match its config: missing {missing[:5]}"
                                  f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                                  f"{' ...' if len(unexpected) > 5 else ''}")
    return model.to(device or default_device()).eval()


def load_model_and_tokenizer(path: str | os.PathLike, *, tokenizer: str | os.PathLike | None = None,
                             revision: str | None = None, **model_options):
    """(model, tokenizer): `load_model(path, **model_options)` and the tokenizer of `tokenizer` (default: `path`)."""
    return (load_model(path, revision=revision, **model_options),
            load_tokenizer(tokenizer or path, revision=None if tokenizer else revision))


__all__ = ["MODEL_DTYPES", "check_device", "default_device", "load_config", "load_model", "load_model_and_tokenizer",
           "load_tokenizer"]
