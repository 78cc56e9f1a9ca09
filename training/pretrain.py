#!/usr/bin/env python
"""Pretrain from a recipe; a thin front over `hf_smallllm.train.run_pretraining` (same options as
`hf-smallllm pretrain`). Runs as is on one process, and under `accelerate launch` or `torchrun` on many:

    python training/pretrain.py --recipe tiny-tinyllama --tokenizer runs/tokenizer
    accelerate launch --config_file training/accelerate/ddp.yaml training/pretrain.py --recipe published-tinyllama
"""

import sys

from hf_smallllm_cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
