"""Declarative key tables from each family's official checkpoint layout to the package's layout.

The tables are transformers' own weight transforms (`WeightRenaming` for pure renames, `WeightConverter` for
renames that also reshape), registered per `model_type` by `hf_smallllm.families`, so that
`BTLMForCausalLM.from_pretrained(official_folder)` and `GEBForCausalLM.from_pretrained(official_folder)` convert on
load, shard by shard, with transformers' loader reporting any missing or unexpected key.

Renamings apply first (in order), then at most one converter, whose target is the final name. Sources of the facts:
ARCHITECTURES.md sections 1.3 (BTLM) and 5.2 (GEB).

TinyLlama, ChuXin and Skywork publish transformers' Llama layout, which is the package layout: no table.
"""

from transformers.core_model_loading import Chunk, Transpose, WeightConverter, WeightRenaming


def btlm_official_transforms() -> list:
    """BTLM (`BTLMLMHeadModel`): GPT-2 module tree, `Conv1D` weights stored [in, out], fused q|k|v with biases,
    SiLU on `c_fc2` (our gate) times `c_fc` (our up), tied output head (absent from the file)."""
    return [
        WeightRenaming(r"^transformer\.wte\.", "model.embed_tokens."),
        WeightRenaming(r"^transformer\.ln_f\.", "model.norm."),
        WeightRenaming(r"^transformer\.h\.", "model.layers."),
        WeightRenaming(r"\.ln_1\.", ".input_layernorm."),
        WeightRenaming(r"\.ln_2\.", ".post_attention_layernorm."),
        WeightRenaming(r"\.attn\.c_proj\.bias$", ".self_attn.o_proj.bias"),
        WeightRenaming(r"\.mlp\.c_fc\.bias$", ".mlp.up_proj.bias"),
        WeightRenaming(r"\.mlp\.c_fc2\.bias$", ".mlp.gate_proj.bias"),
        WeightRenaming(r"\.mlp\.c_proj\.bias$", ".mlp.down_proj.bias"),
        # Conv1D [in, 3 * out] -> transpose -> three nn.Linear weights [out, in]
        WeightConverter(
            "attn.c_attn.weight",
            ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"],
            operations=[Transpose(0, 1), Chunk(dim=0)],
        ),
        WeightConverter(
            "attn.c_attn.bias",
            ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"],
            operations=[Chunk(dim=0)],
        ),
        WeightConverter("attn.c_proj.weight", "self_attn.o_proj.weight", operations=[Transpose(0, 1)]),
        WeightConverter("mlp.c_fc.weight", "mlp.up_proj.weight", operations=[Transpose(0, 1)]),
        WeightConverter("mlp.c_fc2.weight", "mlp.gate_proj.weight", operations=[Transpose(0, 1)]),
        WeightConverter("mlp.c_proj.weight", "mlp.down_proj.weight", operations=[Transpose(0, 1)]),
    ]


def geb_official_transforms() -> list:
    """GEB (`GEBForCausalLM`, ChatGLM3 tree): separate `query`, fused `key_value` (all K heads, then all V heads),
    fused `dense_h_to_4h` (gate half, then up half), untied `output_layer`."""
    return [
        WeightRenaming(r"^transformer\.embedding\.word_embeddings\.", "model.embed_tokens."),
        WeightRenaming(r"^transformer\.encoder\.final_layernorm\.", "model.norm."),
        WeightRenaming(r"^transformer\.encoder\.layers\.", "model.layers."),
        WeightRenaming(r"^transformer\.output_layer\.", "lm_head."),
        WeightRenaming(r"\.self_attention\.query\.", ".self_attn.q_proj."),
        WeightRenaming(r"\.self_attention\.dense\.", ".self_attn.o_proj."),
        WeightRenaming(r"\.mlp\.dense_4h_to_h\.", ".mlp.down_proj."),
        WeightConverter(
            "self_attention.key_value.weight",
            ["self_attn.k_proj.weight", "self_attn.v_proj.weight"],
            operations=[Chunk(dim=0)],
        ),
        WeightConverter(
            "self_attention.key_value.bias",
            ["self_attn.k_proj.bias", "self_attn.v_proj.bias"],
            operations=[Chunk(dim=0)],
        ),
        WeightConverter(
            "mlp.dense_h_to_4h.weight",
            ["mlp.gate_proj.weight", "mlp.up_proj.weight"],
            operations=[Chunk(dim=0)],
        ),
    ]


# model_type -> factory of the transform list (a fresh list per call: transformers mutates transforms while loading)
OFFICIAL_LAYOUT_TRANSFORMS = {
    "smallllm_btlm": btlm_official_transforms,
    "smallllm_geb": geb_official_transforms,
}
