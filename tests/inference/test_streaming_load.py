"""Streaming int4 load (block by block from safetensors) against the load-then-quantize path: the same tensors, the
same logits bit for bit and the same greedy tokens, for every family, single and sharded files, tied and untied
heads; and the usual path where streaming does not apply."""

import pytest
import torch

from hf_smallllm import FAMILIES
from hf_smallllm.inference import InferenceOptions, load_for_inference
from hf_smallllm.inference.fused_projections import fuse_projections
from hf_smallllm.inference.lean_decode import greedy_decode
from hf_smallllm.inference.loading import load_model
from hf_smallllm.inference.streaming_load import load_int4_streaming, streaming_skip_reason
from hf_smallllm.inference.weight_only import Int4Linear, Int8WeightOnlyLinear, can_quantize_int4
from hf_smallllm.inference.weight_only import quantize_int4_weight_only as quantize
from hf_smallllm.testing.tiny_models import tiny_random_model

from ..models.helpers import random_ids

pytestmark = pytest.mark.skipif(not can_quantize_int4(), reason="this torch build lacks the CPU int4 kernels")


def _loaded_then_quantized(folder):
    model = load_model(folder, dtype="bfloat16", device="cpu")
    fuse_projections(model)
    quantize(model)
    return model


def _assert_same(streamed, reference, vocab_size):
    # every tensor the same, in the same place and dtype (buffers too: RoPE tables, ALiBi slopes)
    expected = dict(reference.named_parameters()) | dict(reference.named_buffers())
    got = dict(streamed.named_parameters()) | dict(streamed.named_buffers())
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
    assert [type(m).__name__ for m in streamed.modules()] == [type(m).__name__ for m in reference.modules()]
    ids = random_ids(vocab_size, (1, 7))
    with torch.no_grad():
        assert torch.equal(streamed(ids).logits, reference(ids).logits)
    assert torch.equal(greedy_decode(streamed, ids, 5).tokens, greedy_decode(reference, ids, 5).tokens)


CASES = [(family, tied, shard) for family in FAMILIES for tied, shard in [(None, None)]]
CASES += [("tinyllama", True, "40KB"), ("btlm", False, "40KB"), ("btlm", None, "40KB"), ("geb", None, "40KB")]


@pytest.mark.parametrize(("family", "tied", "shard"), CASES,
                         ids=[f"{f}-{'preset' if t is None else 'tied' if t else 'untied'}-{s or 'single'}"
                              for f, t, s in CASES])
def test_streaming_matches_load_then_quantize(tmp_path, family, tied, shard):
    overrides = {} if tied is None else {"tie_word_embeddings": tied}
    model = tiny_random_model(family, seed=1, **overrides)
    # float32 on disk: the streaming path converts to bf16 as from_pretrained does
    model.save_pretrained(tmp_path, **({"max_shard_size": shard} if shard else {}))
    assert (tmp_path / ("model.safetensors.index.json" if shard else "model.safetensors")).is_file()
    assert streaming_skip_reason(tmp_path) is None
    streamed = load_int4_streaming(tmp_path)
    assert streamed is not None and not streamed.training
    assert isinstance(streamed.lm_head, Int8WeightOnlyLinear)
    assert any(isinstance(m, Int4Linear) for m in streamed.modules())
    if model.config.tie_word_embeddings:  # the embedding stays bf16; the head has its own int8 copy
        assert streamed.model.embed_tokens.weight.dtype == torch.bfloat16
    _assert_same(streamed, _loaded_then_quantized(tmp_path), model.config.vocab_size)


def test_bin_weights_take_the_usual_path(tmp_path, tiny_checkpoint):
    import shutil

    from safetensors.torch import load_file

    folder = shutil.copytree(tiny_checkpoint, tmp_path / "bin")
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    assert "safetensors" in streaming_skip_reason(folder)
    assert load_int4_streaming(folder) is None
    options = InferenceOptions(dtype="bfloat16", quantization="int4", pack_linears=False)
    model, _ = load_for_inference(folder, options)  # loaded whole, then quantized
    assert isinstance(model.lm_head, Int8WeightOnlyLinear)
    streamed, _ = load_for_inference(tiny_checkpoint, options)
    _assert_same(model, streamed, model.config.vocab_size)


def test_foreign_tensor_names_take_the_usual_path(tmp_path):
    from safetensors.torch import load_file, save_file

    tiny_random_model("tinyllama").save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["extra.weight"] = torch.zeros(2)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    assert load_int4_streaming(tmp_path) is None


def test_load_for_inference_streams_int4(tiny_checkpoint, monkeypatch):
    from hf_smallllm.inference import streaming_load

    options = InferenceOptions(dtype="bfloat16", quantization="int4", pack_linears=False)
    calls = []
    original = streaming_load.load_int4_streaming
    monkeypatch.setattr(streaming_load, "load_int4_streaming", lambda *a, **k: calls.append(1) or original(*a, **k))
    streamed, _ = load_for_inference(tiny_checkpoint, options)
    assert calls and isinstance(streamed.lm_head, Int8WeightOnlyLinear)
    monkeypatch.setattr(streaming_load, "load_int4_streaming", lambda *a, **k: None)  # force the usual path
    reference, _ = load_for_inference(tiny_checkpoint, options)
    _assert_same(streamed, reference, streamed.config.vocab_size)
    assert streamed.generation_config.to_dict() == reference.generation_config.to_dict()


@pytest.fixture(scope="module")
def sentencepiece_model():
    from hf_smallllm.testing.official_repos import train_sentencepiece_model

    return train_sentencepiece_model()


@pytest.mark.parametrize("family", ["btlm", "skywork", "geb"])
def test_official_layouts_stream_only_where_names_match(tmp_path, family, sentencepiece_model):
    """Official folders that transformers converts on load (renamed, fused or split tensors) take the usual path;
    one whose tensors already carry the package's names streams to the same model."""
    from hf_smallllm.testing.official_repos import write_official_repo

    folder = write_official_repo(family, tmp_path / family, weight_format="safetensors",
                                 sentencepiece_model=sentencepiece_model)
    streamed = load_int4_streaming(folder)
    assert (streamed is None) == (family in ("btlm", "geb"))  # GPT-2 and ChatGLM names; Skywork's are Llama's
    if streamed is not None:
        reference = _loaded_then_quantized(folder)
        _assert_same(streamed, reference, reference.config.vocab_size)


def test_damaged_weights_take_the_usual_path(tmp_path):
    """A truncated or garbage file is left to `load_model`, which reports it in one line."""
    tiny_random_model("tinyllama").save_pretrained(tmp_path / "truncated")
    weights = tmp_path / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    tiny_random_model("tinyllama").save_pretrained(tmp_path / "garbage")
    (tmp_path / "garbage" / "model.safetensors").write_bytes(b"not a safetensors file")
    for folder in (tmp_path / "truncated", tmp_path / "garbage"):
        assert "unreadable" in streaming_skip_reason(folder)
        assert load_int4_streaming(folder) is None
