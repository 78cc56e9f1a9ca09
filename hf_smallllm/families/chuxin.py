"""ChuXin-1.6B: a Llama 2 backbone (multi-head attention) with DeepSeek-LLM's byte-level BPE (arXiv 2405.04828).

Architecture numbers are the config class defaults (`models/configuration_chuxin.py`, sources cited there). The
published config.json says BOS 1 / EOS 2, but the DeepSeek tokenizer it ships with uses 100000 / 100001
(docs/architectures.md 4.1), so its config.json ids are not trusted on import. Tokenizer: DeepSeek's byte-level BPE with
digit splitting, 100,000 learned entries, then BOS `<｜begin▁of▁sentence｜>` and EOS = PAD `<｜end▁of▁sentence｜>`.
"""

from . import SMALL, TINY, Citation, Family, GGUFFormat, OfficialFormat

DEEPSEEK_BOS = "<｜begin▁of▁sentence｜>"
DEEPSEEK_EOS = "<｜end▁of▁sentence｜>"

FAMILY = Family(
    name="chuxin",
    title="ChuXin-1.6B",
    config_class_name="ChuXinConfig",
    model_class_name="ChuXinModel",
    causal_lm_class_name="ChuXinForCausalLM",
    presets={
        "published": {},
        # special ids inside the tiny vocabulary; ChuXin pads with EOS
        "tiny": {**TINY, "num_key_value_heads": 4, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2},
        "small": {**SMALL, "num_key_value_heads": 8, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2},
    },
    official=OfficialFormat(layout="llama", repo_id="chuxin-llm/Chuxin-1.6B-Base", config_json_ids_trusted=False),
    gguf=GGUFFormat("llama", "gpt2", "deepseek-llm"),  # llama.cpp: Llama 2 exactly; DeepSeek-LLM byte-level BPE
    tokenizer=dict(kind="byte_level", pre_tokenizer="deepseek", split_digits=True, vocab_size=100_000,
                   trailing_special_tokens=[DEEPSEEK_BOS, DEEPSEEK_EOS], bos_token=DEEPSEEK_BOS,
                   eos_token=DEEPSEEK_EOS, pad_token=DEEPSEEK_EOS, model_max_length=4096),
    chat_format="generic",
    model_card="chuxin.md",
    citation=Citation("2405.04828", """@misc{zhuang2024chuxin,
  title = {ChuXin: 1.6B Technical Report},
  author = {Xiaomin Zhuang and Yufan Jiang and Qiaozhi He and Zhihua Wu},
  year = {2024},
  eprint = {2405.04828},
  archivePrefix = {arXiv},
  primaryClass = {cs.CL}
}"""),
)
