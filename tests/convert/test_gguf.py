"""GGUF export (`hf-smallllm convert to-gguf`): every family's file read back (architecture, metadata, tensor names,
shapes and types), the reference forward of each file against the package model, output types, refusals, atomic
writes, transformers' own `gguf_file=` loader on the `llama` exports, and the command line. Parity with llama.cpp
itself is in test_gguf_llama_cpp.py."""

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("gguf")

from hf_smallllm.convert.configs import InexpressibleConfigError  # noqa: E402
from hf_smallllm.convert.gguf import package_to_gguf  # noqa: E402
from hf_smallllm.convert.verify import ConversionVerificationError  # noqa: E402
from hf_smallllm.families import FAMILIES as FAMILY_RECORDS  # noqa: E402

from .gguf_models import CHAT_TEMPLATE, FAMILIES, tiny_family_checkpoint  # noqa: E402

pytestmark = pytest.mark.slow

ROPE_DIMS = {"llama": lambda c: c.head_dim, "chatglm": lambda c: c.head_dim // 2}


class _Exports(dict):
    """family -> (checkpoint folder, f32 GGUF path, report), each built on first use."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, family):
        folder = tiny_family_checkpoint(family, self.root / family)
        report = package_to_gguf(folder, self.root / f"{family}-f32.gguf", progress=False)
        self[family] = (folder, self.root / f"{family}-f32.gguf", report)
        return self[family]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return _Exports(tmp_path_factory.mktemp("gguf"))


def _metadata(path):
    from transformers.integrations.gguf.reader import GgufHeader, read_gguf_metadata

    metadata, _ = read_gguf_metadata(str(path), ("tokenizer.ggml.tokens",))
    return metadata, GgufHeader.from_file(str(path))


def _expected_tensors(config, architecture):
    names = {"token_embd.weight", "output_norm.weight"}
    if architecture == "jais" or not config.tie_word_embeddings:
        names.add("output.weight")
    if architecture == "jais":
        names.add("output_norm.bias")
    for i in range(config.num_hidden_layers):
        b = f"blk.{i}."
        names |= {b + "attn_norm.weight", b + "attn_output.weight", b + "ffn_norm.weight", b + "ffn_down.weight",
                  b + "ffn_up.weight"}
        if architecture == "jais":
            names |= {b + n for n in ("attn_norm.bias", "attn_qkv.weight", "attn_qkv.bias", "attn_output.bias",
                                      "ffn_norm.bias", "ffn_gate.weight", "ffn_gate.bias", "ffn_up.bias",
                                      "ffn_down.bias")}
        else:
            names |= {b + "attn_q.weight", b + "attn_k.weight", b + "attn_v.weight"}
            if architecture == "llama":
                names.add(b + "ffn_gate.weight")
    return names


@pytest.mark.parametrize("family", FAMILIES)
def test_gguf_file_describes_the_model(exports, family):
    from hf_smallllm.convert.converter import load_package_config
    from hf_smallllm.tokenization.alignment import special_token_behaviour
    from hf_smallllm.tokenization.official import load_tokenizer

    folder, path, report = exports[family]
    config = load_package_config(folder)
    architecture = FAMILY_RECORDS[family].gguf.architecture
    metadata, header = _metadata(path)
    assert metadata["general.architecture"] == architecture == report.architecture
    assert metadata[f"{architecture}.context_length"] == config.max_position_embeddings
    assert metadata[f"{architecture}.block_count"] == config.num_hidden_layers
    assert metadata[f"{architecture}.embedding_length"] == config.hidden_size
    assert metadata[f"{architecture}.feed_forward_length"] == config.intermediate_size
    assert metadata[f"{architecture}.attention.head_count"] == config.num_attention_heads
    assert metadata[f"{architecture}.attention.head_count_kv"] == config.num_key_value_heads
    if architecture == "jais":
        assert metadata["jais.attention.max_alibi_bias"] == 8.0
        assert metadata["jais.attention.layer_norm_epsilon"] == pytest.approx(config.norm_eps)
    else:
        assert metadata[f"{architecture}.rope.dimension_count"] == ROPE_DIMS[architecture](config)
        assert metadata[f"{architecture}.attention.layer_norm_rms_epsilon"] == pytest.approx(config.norm_eps)

    expected_tokenizer = FAMILY_RECORDS[family].gguf
    assert metadata["tokenizer.ggml.model"] == expected_tokenizer.tokenizer
    assert metadata.get("tokenizer.ggml.pre") == expected_tokenizer.pre_tokenizer
    tokens = metadata["tokenizer.ggml.tokens"]
    assert len(tokens) == config.vocab_size and tokens[-1] == f"[PAD{config.vocab_size - 1}]"
    assert metadata["tokenizer.ggml.bos_token_id"] == config.bos_token_id
    assert metadata["tokenizer.ggml.eos_token_id"] == config.eos_token_id
    assert metadata["tokenizer.chat_template"] == CHAT_TEMPLATE
    # as the tokenizer does it: Llama-2's SentencePiece and the reference DeepSeek-LLM vocabulary add BOS, GPT-2 not
    tokenizer = load_tokenizer(folder)
    assert metadata["tokenizer.ggml.add_bos_token"] == special_token_behaviour(tokenizer)[0]
    assert metadata["tokenizer.ggml.add_bos_token"] == (family != "btlm")

    shapes = {info.name: info.shape for info in header.tensors}
    assert set(shapes) == _expected_tensors(config, architecture)
    assert shapes["token_embd.weight"] == (config.vocab_size, config.hidden_size)
    assert shapes["blk.0.ffn_down.weight"] == (config.hidden_size, config.intermediate_size)
    if architecture == "chatglm":
        assert shapes["blk.0.ffn_up.weight"] == (2 * config.intermediate_size, config.hidden_size)
    if architecture == "jais":
        kv = config.num_key_value_heads * config.head_dim
        assert shapes["blk.0.attn_qkv.weight"] == (config.hidden_size + 2 * kv, config.hidden_size)
    else:
        assert shapes["blk.0.attn_k.weight"] == (config.num_key_value_heads * config.head_dim, config.hidden_size)
    assert {info.ggml_type for info in header.tensors} == {0}  # all F32


@pytest.mark.parametrize("family", FAMILIES)
def test_reference_forward_of_the_file_matches_the_model(exports, family):
    report = exports[family][2]
    assert report.check is not None and report.check.max_abs_diff < 1e-4


def test_gguf_reader_of_the_gguf_package(exports):
    from gguf import GGUFReader

    reader = GGUFReader(str(exports["geb"][1]))
    assert reader.fields["general.architecture"].contents() == "chatglm"
    assert reader.fields["chatglm.context_length"].contents() == 512
    names = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}  # ggml order: [in, out]
    assert names["blk.1.attn_q.weight"] == (64, 64)
    assert names["blk.1.ffn_up.weight"] == (64, 2 * 172)


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0", "q4_0"])
def test_output_types(exports, tmp_path, outtype):
    from transformers.integrations.gguf.reader import GgufHeader

    folder = exports["btlm"][0]
    report = package_to_gguf(folder, tmp_path / f"btlm-{outtype}.gguf", outtype=outtype, progress=False)
    types = {info.name: info.ggml_type for info in GgufHeader.from_file(report.output).tensors}
    two_d = {"f16": 1, "bf16": 30, "q8_0": 8, "q4_0": 2}[outtype]
    assert types["blk.0.attn_norm.bias"] == types["output_norm.weight"] == 0  # 1-D stays f32
    assert types["blk.0.attn_qkv.weight"] == two_d  # rows of 64: whole blocks
    # rows of 170 (the tiny BTLM MLP width) are not whole 32-blocks: f16 instead of a block type
    assert types["blk.0.ffn_down.weight"] == (two_d if outtype in ("f16", "bf16") else 1)
    assert types["output.weight"] == (8 if outtype == "q4_0" else two_d)  # the head stays at 8 bits
    assert report.check.passed


def test_quantized_file_is_smaller(exports, tmp_path):
    folder, f32_path, _ = exports["chuxin"]
    report = package_to_gguf(folder, tmp_path / "chuxin-q4.gguf", outtype="q4_0", progress=False)
    assert report.bytes_written < 0.3 * Path(f32_path).stat().st_size


def test_refuses_what_llama_cpp_cannot_express(tmp_path):
    folder = tiny_family_checkpoint("btlm", tmp_path / "btlm", alibi_scaling={"type": "linear", "factor": 2.0})
    with pytest.raises(InexpressibleConfigError, match="alibi_scaling"):
        package_to_gguf(folder, tmp_path / "btlm.gguf", progress=False)
    assert not (tmp_path / "btlm.gguf").exists()


def test_alibi_slopes_llama_cpp_cannot_derive_are_refused():
    from hf_smallllm.convert.gguf import _alibi_max_bias
    from hf_smallllm.models.attention_smallllm import alibi_slopes

    assert _alibi_max_bias(alibi_slopes(12), 12) == pytest.approx(8.0)  # BTLM's standard slopes
    assert _alibi_max_bias(alibi_slopes(32).bfloat16(), 32) == 8.0  # a bf16 checkpoint's rounded slopes
    for bad in (torch.zeros(12), -alibi_slopes(12), alibi_slopes(12) * 1.5):  # untrained zeros: no math error
        assert _alibi_max_bias(bad, 12) is None


def test_generic_config_picks_the_architecture_that_fits(tmp_path):
    from hf_smallllm.convert.gguf import architecture_for
    from hf_smallllm.models.configuration_smallllm import SmallLLMConfig

    tiny = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
    assert architecture_for(SmallLLMConfig(**tiny)) == "llama"
    assert architecture_for(SmallLLMConfig(**tiny, rope_layout="interleaved", partial_rotary_factor=0.5)) == "chatglm"
    with pytest.raises(InexpressibleConfigError, match="mlp_bias"):
        architecture_for(SmallLLMConfig(**tiny, position_embedding_type="alibi", norm_type="layernorm"))


def test_failed_check_leaves_nothing(exports, tmp_path):
    folder = exports["tinyllama"][0]
    output = tmp_path / "tinyllama.gguf"
    with pytest.raises(ConversionVerificationError):
        package_to_gguf(folder, output, outtype="q4_0", tolerance=0.0, progress=False)
    assert list(tmp_path.iterdir()) == []
    output.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        package_to_gguf(folder, output, progress=False)
    assert output.read_bytes() == b"keep"


def test_transformers_loads_the_llama_exports(exports):
    from transformers import AutoModelForCausalLM

    from hf_smallllm.convert.verify import verification_ids

    for family in ("tinyllama", "chuxin"):
        folder, path, _ = exports[family]
        ours = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        theirs = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
        ids = verification_ids(ours.config.vocab_size, 512, 16)
        with torch.no_grad():
            diff = (ours(ids).logits - theirs(ids).logits).abs().max().item()
        assert diff < 1e-4, family


def test_command_line(exports, tmp_path, capsys):
    from hf_smallllm.cli import main

    folder = exports["geb"][0]
    report_file = tmp_path / "report.json"
    assert main(["convert", "to-gguf", str(folder), str(tmp_path / "geb.gguf"), "--outtype", "q8_0", "--no-progress",
                 "--json", str(report_file)]) == 0
    assert "package -> GGUF chatglm (geb, q8_0)" in capsys.readouterr().out
    assert json.loads(report_file.read_text())["architecture"] == "chatglm"
    assert main(["convert", "to-gguf", str(folder), str(tmp_path / "geb.gguf"), "--no-progress"]) == 2
    assert "exists" in capsys.readouterr().err


def test_tokenizer_llama_cpp_cannot_reproduce_is_refused():
    from tokenizers import Tokenizer, models
    from tokenizers import pre_tokenizers as pt
    from transformers import PreTrainedTokenizerFast

    from hf_smallllm.convert.gguf_vocab import TokenizerExportError, gguf_vocab

    alphabet = {token: i for i, token in enumerate(sorted(pt.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=alphabet, merges=[]))
    backend.pre_tokenizer = pt.ByteLevel(add_prefix_space=False)
    with pytest.raises(TokenizerExportError, match="merges"):  # GGUF cannot hold the empty merges llama.cpp needs
        gguf_vocab(PreTrainedTokenizerFast(tokenizer_object=backend), 300)
    backend = Tokenizer(models.BPE(vocab={**alphabet, "Ġt": 256}, merges=[("Ġ", "t")]))
    backend.pre_tokenizer = pt.Sequence([pt.Split(" ", "isolated"), pt.ByteLevel(add_prefix_space=False)])
    with pytest.raises(TokenizerExportError, match="pre-tokenizer"):  # split rules llama.cpp does not know
        gguf_vocab(PreTrainedTokenizerFast(tokenizer_object=backend), 300)
