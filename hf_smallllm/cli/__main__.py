"""`python -m hf_smallllm.cli`: the `hf-smallllm` command, after importing the library (use `python -m
hf_smallllm_cli` or the `hf-smallllm` script for a quick `--help`)."""

import sys

from hf_smallllm_cli import main

sys.exit(main())
