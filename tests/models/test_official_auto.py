"""What registering the official `model_type`s with the Auto classes does and does not take over, and the weight
files of the official repositories (the Hub round trip is tests/hub/test_official_repos.py)."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, GlmConfig

import hf_smallllm  # noqa: F401  registers the official model types
from hf_smallllm import GEBConfig, GEBForCausalLM
from hf_smallllm.testing.official_repos import TRIPWIRE_ENV, tripwire_fired, write_official_repo

# THUDM/chatglm3-6b's config.json, shrunk: ChatGLM2/3 keep multi_query_attention and fuse query_key_value.
CHATGLM3 = {
    "model_type": "chatglm", "architectures": ["ChatGLMModel"],
    "auto_map": {"AutoConfig": "configuration_chatglm.ChatGLMConfig",
                 "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration"},
    "num_layers": 2, "padded_vocab_size": 256, "hidden_size": 64, "ffn_hidden_size": 172, "kv_channels": 16,
    "num_attention_heads": 4, "seq_length": 512, "layernorm_epsilon": 1e-5, "rmsnorm": True,
    "apply_residual_connection_post_layernorm": False, "post_layer_norm": True, "add_bias_linear": False,
    "add_qkv_bias": True, "multi_query_attention": True, "multi_query_group_num": 2, "original_rope": True,
    "tie_word_embeddings": False,
}


def test_chatglm_model_type_is_not_claimed(tmp_path, monkeypatch):
    """ChatGLM3 folders stay transformers' business: refused without trust_remote_code (its prompt/error), never read
    as the package's GEB classes; asked for explicitly, GEB's class refuses them in one line."""
    (tmp_path / "config.json").write_text(json.dumps(CHATGLM3))
    (tmp_path / "configuration_chatglm.py").write_text("raise RuntimeError('MARKER')\n")
    monkeypatch.setattr("transformers.dynamic_module_utils.TIME_OUT_REMOTE_CODE", 0)  # no interactive prompt
    with pytest.raises(ValueError) as refused:
        AutoConfig.from_pretrained(tmp_path, trust_remote_code=False)
    assert "GEB" not in str(refused.value)
    with pytest.raises(ValueError, match="ChatGLM2/3's .* not GEB's"):
        GEBConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="ChatGLM2/3's"):
        GEBForCausalLM.from_pretrained(tmp_path)


def test_transformers_own_model_types_stay_with_transformers(tmp_path):
    GlmConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16).save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is GlmConfig


@pytest.mark.parametrize("family", ["btlm", "skywork", "geb"])
@pytest.mark.parametrize("weight_format", ["bin", "sharded-bin", "sharded-safetensors", "safetensors"])
def test_every_published_weight_format_loads(family, weight_format, tmp_path, monkeypatch):
    marker = tmp_path / "tripwire"
    monkeypatch.setenv(TRIPWIRE_ENV, str(marker))
    reference = write_official_repo(family, tmp_path / "reference", weight_format="safetensors",
                                    sentencepiece_model=_SENTENCEPIECE.get())
    folder = write_official_repo(family, tmp_path / weight_format, weight_format=weight_format,
                                 sentencepiece_model=_SENTENCEPIECE.get())
    ids = torch.tensor([[1, 7, 42, 99, 3]])
    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(reference).eval()(ids).logits
        for trust in (False, True):
            model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=trust).eval()
            torch.testing.assert_close(model(ids).logits, expected, atol=0, rtol=0)
    assert tripwire_fired(marker) is None


class _SentencePieceCache:
    model: bytes | None = None

    def get(self) -> bytes:
        if self.model is None:
            from hf_smallllm.testing.official_repos import train_sentencepiece_model

            self.model = train_sentencepiece_model()
        return self.model


_SENTENCEPIECE = _SentencePieceCache()


class _Planted:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['HF_SMALLLLM_TRIPWIRE'], 'w').write('pickle')",))


def test_a_pickle_planted_in_pytorch_model_bin_is_not_run(tmp_path, monkeypatch):
    marker = tmp_path / "tripwire"
    monkeypatch.setenv(TRIPWIRE_ENV, str(marker))
    folder = write_official_repo("btlm", tmp_path / "btlm", weight_format="bin")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["planted"] = _Planted()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|unsupported"):
        AutoModelForCausalLM.from_pretrained(folder)
    assert tripwire_fired(marker) is None
