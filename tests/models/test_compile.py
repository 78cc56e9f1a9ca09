"""torch.compile and generation, as transformers' own model suite checks them (`GenerationTesterMixin`):

- `test_generate_compile_model_forward_fullgraph`: every class that declares `_can_compile_fullgraph` generates with a
  static cache through `generate`'s automatic compilation (`CompileConfig(fullgraph=True, dynamic=False)`, forced on
  CPU), without graph breaks or recompilation across two generations, and with the eager tokens and scores.
  Dynamo's `eager` backend traces exactly what inductor would (graph breaks and guards are Dynamo's) and keeps the
  test to seconds; one family also runs through inductor (slow).
- `test_inherits_generation_mixin`: `GenerationMixin` is listed in the bases of each causal-LM class itself, which
  transformers checks by `"GenerationMixin" in str(model_class.__bases__)`.
"""

import pytest
import torch
from transformers import CompileConfig

from hf_smallllm import FAMILIES

from .helpers import ALL_FAMILIES, random_ids, tiny_model


def _input_sets(vocab_size: int) -> list[dict]:
    """Two different inputs of the same shape, each a batch of two rows, the first left-padded."""
    sets = []
    for _ in range(2):
        ids = random_ids(vocab_size, (2, 7))
        mask = torch.ones_like(ids)
        mask[0, :2] = 0
        ids[0, :2] = 0
        sets.append({"input_ids": ids, "attention_mask": mask})
    return sets


def _generate_compiled_and_eager(model, backend: str):
    torch.compiler.reset()
    compile_config = CompileConfig(fullgraph=True, dynamic=False, backend=backend)
    compile_config._compile_all_devices = True  # compile on CPU too, as transformers' test does
    kwargs = {"use_cache": True, "do_sample": False, "max_new_tokens": 5, "return_dict_in_generate": True,
              "output_scores": True, "compile_config": compile_config, "pad_token_id": 0, "eos_token_id": None}
    inputs = _input_sets(model.config.vocab_size)
    with torch.no_grad():
        with torch.compiler.set_stance("force_eager"):
            eager = [model.generate(**i, **kwargs) for i in inputs]
        assert not hasattr(model, "_compiled_call")  # a dynamic cache does not compile
        compiled = [model.generate(**inputs[0], cache_implementation="static", **kwargs)]
        assert hasattr(model, "_compiled_call")  # the static cache did
        with torch.compiler.set_stance("fail_on_recompile"):  # the second generation reuses the first graph
            compiled.append(model.generate(**inputs[1], cache_implementation="static", **kwargs))
    for got, expected in zip(compiled, eager, strict=True):
        assert torch.equal(got.sequences, expected.sequences)
        for got_scores, expected_scores in zip(got.scores, expected.scores, strict=True):
            torch.testing.assert_close(got_scores, expected_scores, atol=1e-5, rtol=1e-5)


# every family on sdpa; eager once, for ALiBi, whose bias goes into eager's float mask rather than sdpa's boolean one
@pytest.mark.parametrize("family,attn", [(family, "sdpa") for family in ALL_FAMILIES] + [("btlm", "eager")])
def test_generate_compile_model_forward_fullgraph(family, attn):
    model = tiny_model(family, attn)
    assert type(model)._can_compile_fullgraph
    _generate_compiled_and_eager(model, backend="eager")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["btlm", "tinyllama"])
def test_generate_compile_model_forward_fullgraph_inductor(family):
    _generate_compiled_and_eager(tiny_model(family, "sdpa"), backend="inductor")


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_inherits_generation_mixin(family):
    model_class = FAMILIES[family].causal_lm_class
    assert "GenerationMixin" in str(model_class.__bases__)
