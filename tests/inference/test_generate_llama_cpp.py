"""`hf-smallllm generate --backend llama.cpp`: a checkpoint folder is exported to GGUF and decoded by llama.cpp, with
the same greedy tokens as the PyTorch path; options that only the torch backend has are refused in one line."""

import pytest

pytest.importorskip("llama_cpp")

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from hf_smallllm.inference import InferenceOptions, load_for_inference  # noqa: E402
from hf_smallllm.inference.llama_cpp import llama_cpp_stream_generate  # noqa: E402
from hf_smallllm_cli import main  # noqa: E402

pytestmark = pytest.mark.llama_cpp
PROMPT = "Now, fair Hippolyta, our nuptial hour"


def test_llama_cpp_backend_decodes_the_torch_paths_greedy_tokens(tiny_checkpoint):
    pieces = []
    stats = llama_cpp_stream_generate(tiny_checkpoint, PROMPT, max_new_tokens=8, on_text=pieces.append)
    model, tokenizer = load_for_inference(tiny_checkpoint, InferenceOptions(pack_linears=False))
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)[0, ids.shape[1]:]
    assert stats.extra["token_ids"] == expected.tolist()[: len(stats.extra["token_ids"])]
    assert stats.new_tokens == len(stats.extra["token_ids"]) >= 1 and stats.extra["gguf_type"] == "f32"
    assert "".join(pieces) == stats.text and stats.prompt_tokens == ids.shape[1]


def test_llama_cpp_backend_from_the_cli_and_a_gguf_file(tiny_checkpoint, tmp_path, capsys):
    assert main(["generate", str(tiny_checkpoint), "--prompt", PROMPT, "--max-new-tokens", "4", "--backend",
                 "llama.cpp", "--quantize", "int8"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(PROMPT) and "llama.cpp, GGUF q8_0" in err and "tokens/s" in err
    gguf = tmp_path / "tiny.gguf"
    assert main(["convert", "to-gguf", str(tiny_checkpoint), str(gguf), "--no-verify"]) == 0
    capsys.readouterr()
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    stats = llama_cpp_stream_generate(gguf, PROMPT, max_new_tokens=4, on_text=lambda _: None)
    folder = llama_cpp_stream_generate(tiny_checkpoint, PROMPT, max_new_tokens=4, on_text=lambda _: None)
    assert stats.extra["token_ids"] == folder.extra["token_ids"]  # llama.cpp's own tokenizer on the file
    assert stats.prompt_tokens == len(tokenizer(PROMPT)["input_ids"])


def test_llama_cpp_backend_refuses_torch_only_options(tiny_checkpoint, tmp_path, capsys):
    assert main(["generate", str(tiny_checkpoint), "--prompt", "x", "--backend", "llama.cpp", "--compile"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--compile applies only to the torch backend" in err
    assert main(["generate", str(tmp_path / "missing"), "--prompt", "x", "--backend", "llama.cpp"]) == 2
    assert "no " in capsys.readouterr().err
