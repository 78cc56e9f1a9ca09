"""TinyLlama-1.1B: the Llama 2 architecture with grouped-query attention, trained on 3T tokens (arXiv 2401.02385).

Architecture numbers are the config class defaults (`models/configuration_tinyllama.py`, sources cited there);
tokenizer facts from docs/architectures.md (Llama-2's SentencePiece BPE: `<unk>` 0, `<s>` 1, `</s>` 2, BOS added);
TinyLlama names its intermediate checkpoints `step-{N/1000}k-token-{T}B`
(HF:TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T). Chat format `zephyr`: TinyLlama-1.1B-Chat-v1.0's
tokenizer_config.json `chat_template` (`sft/templates.py`).
"""

from . import SMALL, TINY, Citation, Family, GGUFFormat, OfficialFormat

FAMILY = Family(
    name="tinyllama",
    title="TinyLlama",
    config_class_name="TinyLlamaConfig",
    model_class_name="TinyLlamaModel",
    causal_lm_class_name="TinyLlamaForCausalLM",
    presets={
        "published": {},
        "tiny": {**TINY, "num_key_value_heads": 2},
        "small": {**SMALL, "num_key_value_heads": 2},
    },
    official=OfficialFormat(layout="llama", repo_id="TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T"),
    gguf=GGUFFormat("llama", "llama"),  # llama.cpp: Llama 2 exactly
    tokenizer=dict(kind="sentencepiece_bpe", split_digits=True, vocab_size=32_000,
                   leading_special_tokens=["<unk>", "<s>", "</s>"], unk_token="<unk>", bos_token="<s>",
                   eos_token="</s>", add_bos_token=True, model_max_length=2048),
    chat_format="zephyr",
    model_card="tinyllama.md",
    citation=Citation("2401.02385", """@misc{zhang2024tinyllama,
  title = {TinyLlama: An Open-Source Small Language Model},
  author = {Peiyuan Zhang and Guangtao Zeng and Tianduo Wang and Wei Lu},
  year = {2024},
  eprint = {2401.02385},
  archivePrefix = {arXiv},
  primaryClass = {cs.CL}
}"""),
    branch_template="step-{step_k}k-token-{tokens}B",
    # the README's milestone table (docs/architectures.md 3.4); every branch of
    # TinyLlama/tinyLlama-intermediate-checkpoints is listed by `hf-smallllm snapshots` from the Hub instead
    milestone_repos=(
        ("PY007/TinyLlama-1.1B-step-50K-105b", 50_000, 105 * 10**9),
        ("PY007/TinyLlama-1.1B-intermediate-step-240k-503b", 240_000, 503 * 10**9),
        ("PY007/TinyLlama-1.1B-intermediate-step-480k-1T", 480_000, 10**12),
        ("PY007/TinyLlama-1.1B-intermediate-step-715k-1.5T", 715_000, 1_500 * 10**9),
        ("TinyLlama/TinyLlama-1.1B-intermediate-step-955k-token-2T", 955_000, 2 * 10**12),
        ("TinyLlama/TinyLlama-1.1B-intermediate-step-1195k-token-2.5T", 1_195_000, 2_500 * 10**9),
        ("TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T", 1_431_000, 3 * 10**12),
    ),
)
