"""GEB-1.3B: a ChatGLM3-derived bilingual model with grouped-query attention and half-rotary, interleaved RoPE
(arXiv 2406.09900).

Architecture numbers are the config class defaults (`models/configuration_geb.py`, sources cited there).

Tokenizer (HF:GEB-AGI/geb-1.3b tokenization_geb.py, rev 70567aa, the SentencePiece wrapper's constructor)
[verified]: SentencePiece BPE; BOS and EOS are the SentencePiece model's own bos/eos ids, PAD is its unk id, and the
special tokens get the ids right after the SentencePiece vocabulary in this order: `[MASK]`, `[gMASK]`, `[sMASK]`,
`<sop>`, `<eop>`, `<eod>` (angle brackets and an `<eod>`, unlike ChatGLM3's bare `sop`/`eop`), then four more
entries; `<bos>`/`<eos>` follow as second names of the SentencePiece bos/eos (no new ids). Not verified: the text of
those four entries (the stored copies of the file render them empty; ChatGLM3's role markers `<|system|>` `<|user|>`
`<|assistant|>` `<|observation|>`, which ChatGLM3 lists right after its `sop`/`eop`, are assumed), the size of the
SentencePiece vocabulary (ChatGLM3's 64,789 with `<unk>` `<s>` `</s>` first is assumed: GEB's `GEBtokenizer.model`
is "refined from ChatGLM-3" and the same 1.02 MB), and whether GEB adds BOS (ChatGLM3 does not, so none is added).

Chat format `geb` (`sft/templates.py`): `[gMASK]<sop>` then ChatGLM3's role-marker layout; GEB's `chat()` itself
could not be read, so everything after the prefix is [assumed] from ChatGLM3.
"""

from . import SMALL, TINY, Citation, Family, GGUFFormat, OfficialFormat

# tokenization_geb.py's order, with ids right after the SentencePiece vocabulary; the last four (role markers) are
# assumed (see the module docstring)
_SPECIAL_TOKENS = ("[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<eod>", "<|system|>", "<|user|>",
                   "<|assistant|>", "<|observation|>")

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
    # config.json `model_type` "geblm" (commit 93e390f); "chatglm" is not claimed: ChatGLM2/3 checkpoints fuse
    # query_key_value, which this layout does not read, so they stay with transformers (and their own code)
    official=OfficialFormat(layout="geb-official", repo_id="GEB-AGI/geb-1.3b", auto_model_types=("geblm",),
                            tokenizer_class="GEBTokenizer",
                            tokenizer_model_file="GEBtokenizer.model", tokenizer_added_tokens=_SPECIAL_TOKENS,
                            tokenizer_adds_bos=False),
    # llama.cpp: RoPE on the first half of each head with adjacent pairs = llama.cpp's NORM rope over
    # rope.dimension_count = head_dim / 2; `llama` rotates whole heads
    gguf=GGUFFormat("chatglm", "llama"),
    tokenizer=dict(kind="sentencepiece_bpe", split_digits=True, vocab_size=64_789,
                   leading_special_tokens=["<unk>", "<s>", "</s>"],
                   trailing_special_tokens=list(_SPECIAL_TOKENS),
                   unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<unk>", model_max_length=4096,
                   alphabet_share=0.25),
    chat_format="geb",
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
