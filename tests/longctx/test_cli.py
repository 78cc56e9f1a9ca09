"""`hf-smallllm longctx passkey | position-loss` on a saved tiny model: JSON, PNG, per-model config overrides."""

import json

import pytest

from hf_smallllm import FAMILIES, preset_config
from hf_smallllm_cli import main


@pytest.fixture(scope="module")
def saved_alibi_model(corpus_tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("alibi_model")
    config = preset_config("btlm", "tiny", vocab_size=len(corpus_tokenizer), max_position_embeddings=128,
                           bos_token_id=1, eos_token_id=2)
    FAMILIES["btlm"].causal_lm_class(config).save_pretrained(folder)
    corpus_tokenizer.save_pretrained(folder)
    return folder


def test_position_loss_compares_overrides(saved_alibi_model, tmp_path, capsys):
    out = tmp_path / "curves"
    code = main(["longctx", "position-loss", "--model", f"plain={saved_alibi_model}",
                 "--model", f"dynamic={saved_alibi_model}",
                 "--set", "dynamic:alibi_scaling={type: linear, train_seq_len: 128}",
                 "--length", "256", "--rows", "2", "--bucket", "32", "--output-dir", str(out)])
    assert code == 0
    report = json.loads((out / "position_loss.json").read_text())
    assert report["train_length"] == 128
    assert report["models"]["dynamic"]["overrides"] == {"alibi_scaling": {"type": "linear", "train_seq_len": 128}}
    assert len(report["models"]["plain"]["loss"]) == 8
    assert report["models"]["plain"]["loss"][-1] != report["models"]["dynamic"]["loss"][-1]
    assert (out / "position_loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "| dynamic |" in capsys.readouterr().out


def test_passkey(saved_alibi_model, tmp_path, capsys):
    out = tmp_path / "passkey"
    code = main(["longctx", "passkey", "--model", str(saved_alibi_model), "--lengths", "128,192", "--depths", "0,1",
                 "--samples", "1", "--output-dir", str(out)])
    assert code == 0
    report = json.loads((out / "passkey.json").read_text())[str(saved_alibi_model)]
    assert 0.0 <= report["accuracy"] <= 1.0 and len(report["results"]) == 4
    assert set(report["grid"]) == {"128", "192"}
    assert (out / "passkey.png").exists()


def test_bad_override_is_one_line_error(saved_alibi_model, tmp_path, capsys):
    code = main(["longctx", "position-loss", "--model", f"a={saved_alibi_model}", "--set", "b:alibi_scaling=1",
                 "--length", "64", "--output-dir", str(tmp_path)])
    assert code == 2
    assert "names model 'b'" in capsys.readouterr().err
    code = main(["longctx", "position-loss", "--model", str(saved_alibi_model), "--set",
                 "alibi_scaling={type: linear, factor: 0.5}", "--length", "64", "--output-dir", str(tmp_path)])
    assert code == 2
    assert "alibi_scaling" in capsys.readouterr().err
