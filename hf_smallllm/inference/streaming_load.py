"""Loading a checkpoint straight into int4 weight-only layers, one block at a time, never holding the whole bf16 model.

`load_model` followed by `fuse_projections` and `quantize_int4_weight_only` holds every bf16 weight before the first
one is quantized: BTLM-3B (published shape) peaked at 8.4 GB while loading for a 2.4 GB int4 model. Here the model is
built with empty (meta) parameters, and then each group of modules (every decoder block; the embedding, final norm
and output head, each on its own) is read from the safetensors files, fused and quantized before the next group is
read. The peak is the int4 model plus about one block in bf16 (and the bf16 output head, quantized last).

The layers are the same ones the load-then-quantize path builds, from the same bf16 tensors, so the logits are
equal: `fuse_projections` and `quantize_int4_weight_only` run per block (both walk `.modules()`; a block holds no
output head, so every linear there is int4), and once more over the whole model at the end, where the output head
is the only plain `nn.Linear` left and gets its int8 copy (a tied head shares the embedding's tensor, which stays).

It applies only where the folder holds exactly the package's own tensors (`streaming_skip_reason` says why not
otherwise), and `load_for_inference` takes the usual path there:
- a Hub id (not a local folder): from_pretrained downloads it; pass the snapshot folder to stream;
- `.bin` weights: a pickle cannot be read one tensor at a time without unpickling the whole file;
- an official layout (BTLM's GPT-2 names, ChatGLM's, lit-gpt's): transformers converts those on load, tensors
  fused or split across blocks (`hf_smallllm.layouts`), so the names in the files are not the model's;
- a checkpoint whose tensors do not match the config: the usual path raises its one-line error for it.
bitsandbytes and non-CPU devices never get here (`load_for_inference` streams only for int4 on CPU).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import UsageValueError

SAFE_WEIGHTS = "model.safetensors"
SAFE_WEIGHTS_INDEX = "model.safetensors.index.json"


def _tensor_files(folder: Path) -> dict[str, Path] | None:
    """{tensor name: safetensors file} of a folder's weights (one file or an index of shards), None without them."""
    from safetensors import safe_open

    if (folder / SAFE_WEIGHTS).is_file():
        with safe_open(folder / SAFE_WEIGHTS, framework="pt") as handle:
            return dict.fromkeys(handle.keys(), folder / SAFE_WEIGHTS)
    if (folder / SAFE_WEIGHTS_INDEX).is_file():
        weight_map = json.loads((folder / SAFE_WEIGHTS_INDEX).read_text()).get("weight_map", {})
        return {name: folder / file for name, file in weight_map.items()}
    return None


def _persistent_tensors(module: nn.Module, prefix: str = "") -> list[tuple[nn.Module, str, str, bool]]:
    """(owner module, attribute, full name, is parameter) for every parameter, tied duplicates included, and every
    persistent buffer (what a checkpoint can store) under `module`."""
    found = []
    for path, owner in module.named_modules(prefix=prefix.rstrip("."), remove_duplicate=False):
        for name, param in owner._parameters.items():
            if param is not None:
                found.append((owner, name, f"{path}.{name}" if path else name, True))
        for name, buffer in owner._buffers.items():
            if buffer is not None and name not in owner._non_persistent_buffers_set:
                found.append((owner, name, f"{path}.{name}" if path else name, False))
    return found


def _groups(model: nn.Module) -> list[tuple[str, nn.Module, bool]]:
    """(name prefix, module, is a block) in the order the model holds them: every element of a `ModuleList` (the
    decoder blocks) is a group to quantize; every other module owning tensors directly is a group of its own."""
    groups, blocks = [], set()
    for name, module in model.named_modules():
        if any(name.startswith(block + ".") for block in blocks):
            continue
        parent_is_list = "." in name and isinstance(model.get_submodule(name.rsplit(".", 1)[0]), nn.ModuleList)
        if parent_is_list:
            blocks.add(name)
            groups.append((name, module, True))
        elif any(p is not None for p in module._parameters.values()) or any(
                b is not None for b in module._buffers.values()):
            groups.append((name, module, False))
    return groups


def _streaming_inputs(folder: Path):
    """(safetensors files by tensor name, config) of `folder`, or the reason, a string, why it cannot be streamed.
    Reads config.json and the safetensors headers once; `load_int4_streaming` goes on with what they gave."""
    if not folder.is_dir():
        return "not a local folder"
    from safetensors import SafetensorError

    try:
        files = _tensor_files(folder)
    except (SafetensorError, OSError, ValueError) as err:  # the usual path reports it in one line
        return f"unreadable weights ({type(err).__name__})"
    if files is None:
        return "no safetensors weights (model.safetensors or model.safetensors.index.json)"
    from .loading import load_config

    config = load_config(folder)
    if not str(getattr(config, "model_type", "")).startswith("smallllm"):
        return f"model_type {config.model_type!r} is not the package's own format"
    return files, config


def streaming_skip_reason(path: str | os.PathLike) -> str | None:
    """Why `load_int4_streaming` cannot load `path` (None: it can). Reads config.json and the safetensors headers."""
    inputs = _streaming_inputs(Path(path))
    return inputs if isinstance(inputs, str) else None


def _empty_model(config, dtype: torch.dtype, attn_implementation: str | None):
    """The causal LM of `config` with meta parameters and real buffers (RoPE's inv_freq, ALiBi's slopes are
    computed at construction, as from_pretrained builds them)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, **kwargs)
    model.tie_weights()  # as from_pretrained does after loading: a tied head is then the embedding's parameter
    return model


def _plan(model: nn.Module, files: dict[str, Path]) -> tuple[dict[str, str], set[str]] | None:
    """({model tensor name: stored name}, names of tied parameters) when the files hold exactly the model's tensors
    (a tied parameter stored under any of its names; a buffer the model computes may be absent), else None. Holds
    no module: a reference to a replaced linear would keep its bf16 weight alive to the end of loading."""
    tensors = _persistent_tensors(model)
    by_object: dict[int, list[str]] = {}  # tied parameters: one object under several names
    for owner, name, full, _ in tensors:
        by_object.setdefault(id(getattr(owner, name)), []).append(full)
    ignored_missing = list(getattr(model, "_keys_to_ignore_on_load_missing", None) or [])
    sources: dict[str, str] = {}
    for owner, name, full, is_param in tensors:
        stored = next((alias for alias in [full, *by_object[id(getattr(owner, name))]] if alias in files), None)
        if stored is None:
            if not is_param and any(re.search(pattern, full) for pattern in ignored_missing):
                continue  # a buffer the model computes (ALiBi slopes) and the checkpoint may omit
            return None  # missing tensor: the usual path reports it
        sources[full] = stored
    expected = set(sources.values())
    ignored_unexpected = list(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or [])
    if any(name not in expected and not any(re.search(p, name) for p in ignored_unexpected) for name in files):
        return None  # tensors the model does not have: a layout the usual path converts, or an error it reports
    tied = {name for names in by_object.values() if len(names) > 1 for name in names}
    return sources, tied


def load_int4_streaming(path: str | os.PathLike, *, dtype: torch.dtype = torch.bfloat16,
                        attn_implementation: str | None = None, fuse: bool = True, progress: bool = False):
    """The model of a local folder in the package's format, its linears int4 weight-only (the output head int8) and,
    if `fuse`, its q/k/v and gate/up fused, read and quantized block by block (module docstring); in eval mode on
    CPU. None where streaming does not apply (`streaming_skip_reason`, or tensors that differ from the model's):
    the caller loads the usual way."""
    from safetensors import SafetensorError, safe_open
    from transformers import GenerationConfig

    from .freed_memory import release_freed_memory
    from .fused_projections import fuse_projections
    from .weight_only import quantize_int4_weight_only

    folder = Path(path)
    inputs = _streaming_inputs(folder)
    if isinstance(inputs, str):
        return None
    files, config = inputs
    model = _empty_model(config, dtype, attn_implementation)
    plan = _plan(model, files)
    if plan is None:
        return None
    sources, tied = plan

    loaded: dict[int, nn.Parameter] = {}  # tied meta parameter -> its real one, so tied names stay one object

    def materialize(module: nn.Module, prefix: str) -> None:
        needed = [(owner, name, full, is_param) for owner, name, full, is_param in _persistent_tensors(module, prefix)
                  if full in sources]
        by_file: dict[Path, list[tuple[nn.Module, str, str, bool]]] = {}
        for entry in needed:
            meta = getattr(entry[0], entry[1])
            if entry[3] and id(meta) in loaded:
                entry[0]._parameters[entry[1]] = loaded[id(meta)]
                continue
            by_file.setdefault(files[sources[entry[2]]], []).append(entry)
        # one open per file and group: a mapping of the whole file, resident as far as read, lives until its handle
        # and every tensor viewing it are gone
        for file, entries in by_file.items():
            with safe_open(file, framework="pt") as handle:
                for owner, name, full, is_param in entries:
                    old = getattr(owner, name)
                    value = handle.get_tensor(sources[full])
                    target = dtype if is_param or old.is_meta else old.dtype
                    # a private copy: safetensors returns views of its mapping of the whole file, and one tensor
                    # kept (the embedding, a norm) would keep every page of the file that was read resident
                    if value.is_floating_point() and value.dtype != target:
                        value = value.to(target)
                    else:
                        value = value.clone()
                    if is_param:
                        param = owner._parameters[name] = nn.Parameter(value, requires_grad=old.requires_grad)
                        if full in tied:  # kept for its other names (nothing else may hold a loaded tensor, or
                            loaded[id(old)] = param  # its bf16 copy would stay alive to the end)
                    else:
                        owner._buffers[name] = value

    groups = _groups(model)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(groups), desc="loading int4", unit="group")
    with torch.no_grad():
        for prefix, module, is_block in groups:
            try:
                materialize(module, prefix)
            except (SafetensorError, OSError) as err:  # a truncated or damaged file, as `load_model` words it
                raise UsageValueError(f"cannot read the weights of {str(path)!r}: {type(err).__name__}: "
                                      f"{' '.join(str(err).split())[:300]}") from None
            if is_block:  # a block holds no output head: its linears all become int4 here, bf16 freed
                if fuse:
                    fuse_projections(module)
                quantize_int4_weight_only(module)
                # the freed bf16 block back to the OS before the next is read (freed_memory.py)
                release_freed_memory(collect=False)
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        left = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
        if left:
            raise RuntimeError(f"streaming int4 load left tensors unread: {left[:5]}")
        # what is left unquantized outside the blocks: the output head (int8) and any other plain linear (int4)
        if fuse:
            fuse_projections(model)
        quantize_int4_weight_only(model)
    model.name_or_path = str(path)
    model.config.name_or_path = str(path)
    if model.can_generate():  # as from_pretrained: the folder's generation_config.json, else one from config.json
        try:
            model.generation_config = GenerationConfig.from_pretrained(folder)
        except OSError:
            model.generation_config = GenerationConfig.from_pretrained(folder, config_file_name="config.json",
                                                                       _from_model_config=True)
    return model.eval()


__all__ = ["load_int4_streaming", "streaming_skip_reason"]
