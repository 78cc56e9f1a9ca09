#!/usr/bin/env python
"""Thin front over `hf-smallllm convert to-gguf` (same options; see `--help` and docs/conversion.md)."""

import sys

from hf_smallllm_cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "to-gguf", *sys.argv[1:]]))
