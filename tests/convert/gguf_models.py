"""Tiny checkpoints of every family with a real tokenizer, for the GGUF export tests.

TinyLlama, Skywork and GEB use Llama-2's SentencePiece vocabulary (their published tokenizers are SentencePiece
models; Skywork's and GEB's own vocabularies are not available offline), ChuXin DeepSeek-LLM's byte-level BPE and
BTLM GPT-2's, all rebuilt from llama.cpp's reference GGUF vocabularies in tests/fixtures/tokenizers. The embedding
has a few rows more than the tokenizer, as the real models pad theirs.
"""

from pathlib import Path

import torch

FIXTURES = Path(__file__).parents[1] / "fixtures" / "tokenizers"
VOCABULARIES = {
    "tinyllama": "ggml-vocab-llama-spm.gguf",
    "skywork": "ggml-vocab-llama-spm.gguf",
    "geb": "ggml-vocab-llama-spm.gguf",
    "chuxin": "ggml-vocab-deepseek-llm.gguf",
    "btlm": "ggml-vocab-gpt-2.gguf",
}
FAMILIES = tuple(VOCABULARIES)
EXTRA_ROWS = 5
CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"


def tiny_family_checkpoint(family: str, folder: Path, **overrides) -> Path:
    """Save a tiny random `family` model with its real tokenizer (and a chat template) into `folder`."""
    from hf_smallllm.convert.formats import causal_lm_class
    from hf_smallllm.families import preset_config
    from hf_smallllm.tokenization.official import load_tokenizer

    tokenizer = load_tokenizer(FIXTURES, gguf_file=VOCABULARIES[family])
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    config = preset_config(family, "tiny", vocab_size=len(tokenizer) + EXTRA_ROWS, **ids, **overrides)
    torch.manual_seed(0)
    model = causal_lm_class(config)(config)
    with torch.no_grad():  # random norms and biases: an export that drops or misplaces one shows in the logits
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
