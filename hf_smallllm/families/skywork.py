"""Skywork-13B: a deep, thin Llama-shaped bilingual model (arXiv 2310.19341).

Architecture numbers are the config class defaults (`models/configuration_skywork.py`, sources cited there). It
publishes Llama tensors with its own remote-code config.json (`skywork-official`). Tokenizer: SentencePiece BPE with
`<unk>` `<s>` `</s>` first, 65,519 base entries, then the chat markers `[USER]` `[BOT]` `[SEP]`; PAD is `<unk>`
(docs/architectures.md).
"""

from . import SMALL, TINY, Citation, Family, GGUFFormat, OfficialFormat

FAMILY = Family(
    name="skywork",
    title="Skywork-13B",
    config_class_name="SkyworkConfig",
    model_class_name="SkyworkModel",
    causal_lm_class_name="SkyworkForCausalLM",
    presets={
        "published": {},
        "tiny": {**TINY, "num_key_value_heads": 4},
        "small": {**SMALL, "num_key_value_heads": 8},
    },
    official=OfficialFormat(layout="skywork-official", repo_id="Skywork/Skywork-13B-base",
                            auto_model_types=("skywork",),
                            tokenizer_class="SkyworkTokenizer"),
    gguf=GGUFFormat("llama", "llama"),  # llama.cpp: Llama 2 exactly (RMSNorm eps 1e-6 is metadata)
    tokenizer=dict(kind="sentencepiece_bpe", split_digits=True, vocab_size=65_519,
                   leading_special_tokens=["<unk>", "<s>", "</s>"],
                   trailing_special_tokens=["[USER]", "[BOT]", "[SEP]"],
                   unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<unk>", add_bos_token=True,
                   model_max_length=4096, alphabet_share=0.25),
    chat_format="skywork",
    # Skywork/Skywork-13B-Base-Intermediate: model_hubs/Skywork-13B-Base-{0.5T,1T,...}/ (docs/architectures.md 2.2)
    snapshot_subfolder_template="model_hubs/Skywork-13B-Base-{tokens_t}T",
    model_card="skywork.md",
    citation=Citation("2310.19341", """@misc{wei2023skywork,
  title = {Skywork: A More Open Bilingual Foundation Model},
  author = {Tianwen Wei and Liang Zhao and Lichang Zhang and Bo Zhu and Lijie Wang and Haihua Yang and Biye Li and Cheng Cheng and Weiwei L{\\"u} and Rui Hu and others},
  year = {2023},
  eprint = {2310.19341},
  archivePrefix = {arXiv},
  primaryClass = {cs.CL}
}"""),  # noqa: E501
)
