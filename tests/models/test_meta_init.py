"""Every family builds on the meta device (what `init_empty_weights`, `device_map` loading and the benchmark twins
do), muP's truncated-normal init included."""

import pytest
from accelerate import init_empty_weights

from hf_smallllm import preset_config
from hf_smallllm.families import FAMILIES


@pytest.mark.parametrize("family", list(FAMILIES))
def test_builds_without_storage(family):
    with init_empty_weights(include_buffers=False):
        model = FAMILIES[family].causal_lm_class(preset_config(family, "tiny"))
    assert model.lm_head.weight.device.type == "meta"
