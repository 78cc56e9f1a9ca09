#!/usr/bin/env python
"""Instruction fine-tuning from an SFT recipe; a thin front over `hf_smallllm.sft.run_sft` (same options as
`hf-smallllm sft train`). Runs on one process, or under `accelerate launch` / `torchrun` on many:

    python training/sft.py --recipe sft_lora --model runs/tiny-geb/checkpoint-100
    accelerate launch --config_file training/accelerate/ddp.yaml training/sft.py --recipe sft_qlora --model CKPT
"""

import sys

from hf_smallllm_cli import main

if __name__ == "__main__":
    sys.exit(main(["sft", "train", *sys.argv[1:]]))
