"""BTLM's muP output alpha: the official config.json (HF:cerebras/btlm-3b-8k-base) writes 2.2200000000000003. That
text is the same IEEE double as 2.22; conversions in both directions must keep it to the last bit."""

import json
import shutil

from hf_smallllm.convert import official_to_package, package_to_official
from hf_smallllm.families import FAMILIES

OFFICIAL_TEXT = "2.2200000000000003"  # as printed in the official config.json
OFFICIAL = float(OFFICIAL_TEXT)


def alpha_in(folder) -> float:
    return json.loads((folder / "config.json").read_text())["mup_output_alpha"]


def test_official_spelling_is_the_published_default():
    assert OFFICIAL.hex() == (2.22).hex() == "0x1.1c28f5c28f5c3p+1"
    config = FAMILIES["btlm"].config_class()
    assert config.mup_output_alpha.hex() == OFFICIAL.hex()
    fields = json.loads(f'{{"mup_output_alpha": {OFFICIAL_TEXT}, "mup_width_scale": 0.1}}')
    read = FAMILIES["btlm"].config_class(**fields)
    assert read.mup_output_alpha.hex() == OFFICIAL.hex()
    assert read.output_logits_multiplier == config.output_logits_multiplier


def test_alpha_survives_official_to_package_to_official(fixtures_dir, tmp_path):
    official = tmp_path / "official"
    shutil.copytree(fixtures_dir / "btlm-tiny", official)
    text = (official / "config.json").read_text()
    (official / "config.json").write_text(
        text.replace('"mup_output_alpha": 2.22', f'"mup_output_alpha": {OFFICIAL_TEXT}'))
    assert OFFICIAL_TEXT in (official / "config.json").read_text()

    package = official_to_package(official, tmp_path / "package", progress=False)
    assert package.check.max_abs_diff <= 1e-4
    assert alpha_in(tmp_path / "package").hex() == OFFICIAL.hex()
    back = package_to_official(tmp_path / "package", tmp_path / "back", progress=False)
    assert back.check.max_abs_diff <= 1e-4
    assert alpha_in(tmp_path / "back").hex() == OFFICIAL.hex()
    again = official_to_package(tmp_path / "back", tmp_path / "again", progress=False)
    assert again.check.max_abs_diff <= 1e-4 and alpha_in(tmp_path / "again").hex() == OFFICIAL.hex()
