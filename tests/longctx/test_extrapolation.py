"""A tiny ALiBi model trained briefly at 32 tokens, evaluated at 64 (2x) with and without position interpolation.

What this shows at this scale (measured, docs/long_context.md): ALiBi already extrapolates to 2x without
interpolation (the loss past the training length stays at the in-length level), and BTLM's dynamic interpolation
(slopes / (64 / 32) over the whole row) stays within a few hundredths of a nat of it: neither blows up. The
benefit BTLM reports for interpolation (arXiv 2310.13017, fig. 5) is at 8K+ lengths of a 3B model; this test pins
the behaviour that holds at any scale and the exact numbers are printed for the record.
"""

import pytest
import torch

from hf_smallllm import FAMILIES, preset_config
from hf_smallllm.longctx import corpus_token_rows, loss_by_position
from hf_smallllm.resources import corpus_path

TRAIN = 32


def _train_tiny_alibi(tokenizer, steps: int = 40) -> torch.nn.Module:
    torch.manual_seed(0)
    config = preset_config("btlm", "tiny", vocab_size=len(tokenizer), max_position_embeddings=TRAIN,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = FAMILIES["btlm"].causal_lm_class(config).train()
    text = corpus_path("en_kjv.txt").read_text(encoding="utf-8")[:200_000]
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"])
    rows = ids[: ids.numel() // TRAIN * TRAIN].view(-1, TRAIN)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = rows[torch.randint(0, rows.shape[0], (16,), generator=generator)]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.mark.slow
def test_alibi_loss_by_position_at_twice_the_training_length(corpus_tokenizer):
    model = _train_tiny_alibi(corpus_tokenizer)
    rows = corpus_token_rows(corpus_tokenizer, 2 * TRAIN, 8)
    curves = {}
    for name, scaling in (("none", None), ("dynamic", {"type": "linear", "train_seq_len": TRAIN})):
        model.config.alibi_scaling = model.model.alibi.alibi_scaling = scaling
        curves[name] = loss_by_position(model, rows, bucket_size=8, progress=False)
    summary = {name: (c.mean_between(0, TRAIN), c.mean_between(TRAIN, 2 * TRAIN)) for name, c in curves.items()}
    print("loss (positions < 32, positions 32-63):", summary)

    before, after = summary["none"]
    assert before < 5.5  # it learned something: ln(1024) = 6.93 at initialisation
    assert after < before + 0.15  # ALiBi extrapolates to 2x without interpolation
    dynamic_before, dynamic_after = summary["dynamic"]
    assert dynamic_after < dynamic_before + 0.15  # and with dynamic interpolation
    assert abs(dynamic_after - after) < 0.15
