"""The coordinate check on real text: under muP the activations stay flat as the width grows 4x, under the standard
parametrization they grow; the table, JSON and PNG are written."""

import json

import pytest

from hf_smallllm.train.coord_check import coord_check


@pytest.fixture(scope="module")
def result():
    return coord_check(widths=(32, 128), steps=4, seeds=(0,), batch_size=4, seq_len=48, progress=False)


def test_mup_stays_flat_where_standard_parametrization_grows(result):
    mup, sp = result.max_growth("mup"), result.max_growth("sp")
    assert mup < 2.0, result.to_markdown()
    assert sp > 3.0 and sp > 2 * mup, result.to_markdown()


def test_outputs_are_written(result, tmp_path):
    paths = result.save(tmp_path)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = paths["md"].read_text()
    assert "| quantity |" in table and "logits" in table and "layer1.mlp" in table
    data = json.loads(paths["json"].read_text())
    assert data and not list(tmp_path.glob(".*"))  # no temporary files left


def test_needs_two_widths():
    with pytest.raises(ValueError, match="at least two widths"):
        coord_check(widths=(64,), steps=1, progress=False)
