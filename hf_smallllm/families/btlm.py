"""BTLM-3B-8K: a GPT-2-style model with SwiGLU, ALiBi and muP (arXiv 2309.11568).

Architecture numbers are the config class defaults (`models/configuration_btlm.py`, sources cited there). Tokenizer:
GPT-2's byte-level BPE, 50,256 learned entries and `<|endoftext|>` (50256) as BOS, EOS and UNK (docs/architectures.md).
"""

from . import SMALL, TINY, Citation, Family, GGUFFormat, OfficialFormat

GPT2_ENDOFTEXT = "<|endoftext|>"

FAMILY = Family(
    name="btlm",
    title="BTLM-3B-8K",
    config_class_name="BTLMConfig",
    model_class_name="BTLMModel",
    causal_lm_class_name="BTLMForCausalLM",
    presets={
        "published": {},
        # muP base at half the tiny width, so the tiny model is a 2x-wide muP model like the real one is 10x
        "tiny": {**TINY, "intermediate_size": 170, "mup_base_hidden_size": 32.0, "mup_base_intermediate_size": 85.0,
                 "bos_token_id": 0, "eos_token_id": 0},
        "small": {**SMALL, "intermediate_size": 1365, "mup_base_hidden_size": 256.0,
                  "mup_base_intermediate_size": 682.6, "bos_token_id": 0, "eos_token_id": 0},
    },
    official=OfficialFormat(layout="btlm-official", repo_id="cerebras/btlm-3b-8k-base", auto_model_types=("btlm",)),
    # llama.cpp: ALiBi, LayerNorm and biases, SwiGLU on c_fc2, scores / d; muP folded into the weights
    gguf=GGUFFormat("jais", "gpt2", "gpt-2"),
    tokenizer=dict(kind="byte_level", pre_tokenizer="gpt2", vocab_size=50_256, trailing_special_tokens=[GPT2_ENDOFTEXT],
                   bos_token=GPT2_ENDOFTEXT, eos_token=GPT2_ENDOFTEXT, unk_token=GPT2_ENDOFTEXT,
                   model_max_length=8192),
    chat_format="generic",
    model_card="btlm.md",
    citation=Citation("2309.11568", """@misc{dey2023btlm,
  title = {BTLM-3B-8K: 7B Parameter Performance in a 3B Parameter Model},
  author = {Nolan Dey and Daria Soboleva and Faisal Al-Khateeb and Bowen Yang and Ribhu Pathria and Hemant Khachane and Shaheer Muhammad and Zhiming Chen and Robert Myers and Jacob Robert Steeves and Natalia Vassilieva and Marvin Tom and Joel Hestness},
  year = {2023},
  eprint = {2309.11568},
  archivePrefix = {arXiv},
  primaryClass = {cs.AI}
}"""),  # noqa: E501 (a BibTeX entry keeps its author list on one line)
)
