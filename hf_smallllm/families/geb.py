"""GEB-1.3B: a ChatGLM3-derived bilingual model with grouped-query attention and half-rotary, interleaved RoPE
(arXiv 2406.09900).

Architecture numbers are the config class defaults (`models/configuration_geb.py`, sources cited there). The
tokenizer follows ChatGLM3's layout (ARCHITECTURES.md): SentencePiece BPE with `<unk>` `<s>` `</s>` first and
ChatGLM3's nine specials after the 64,789 base entries; whether GEB adds BOS is unverified (its tokenizer is custom
remote code), so none is added and ChatGLM3's `[gMASK]sop` prefix is left to the chat template.
"""

from . import SMALL, TINY, Citation, Family, OfficialFormat

FAMILY = Family(
    name="geb",
    title="GEB-1.3B",
    config_class_name="GEBConfig",
    model_class_name="GEBModel",
    causal_lm_class_name="GEBForCausalLM",
    presets={
        "published": {},
        "tiny": {**TINY, "num_key_value_heads": 2, "head_dim": 16},
        "small": {**SMALL, "num_key_value_heads": 2, "head_dim": 64},
    },
    official=OfficialFormat(layout="geb-official"),
    tokenizer=dict(kind="sentencepiece_bpe", split_digits=True, vocab_size=64_789,
                   leading_special_tokens=["<unk>", "<s>", "</s>"],
                   trailing_special_tokens=["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>",
                                            "<|assistant|>", "<|observation|>"],
                   unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<unk>", model_max_length=4096,
                   alphabet_share=0.25),
    chat_format="chatglm3",
    model_card="geb.md",
    citation=Citation("2406.09900", """@misc{wu2024geb,
  title = {GEB-1.3B: Open Lightweight Large Language Model},
  author = {Jie Wu and Yufeng Zhu and Lei Shen and Xuqing Lu},
  year = {2024},
  eprint = {2406.09900},
  archivePrefix = {arXiv},
  primaryClass = {cs.CL}
}"""),
)
