#!/usr/bin/env python
"""Thin front over `hf-smallllm convert package-to-official` (same options; see `--help` and docs/conversion.md)."""

import sys

from hf_smallllm_cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "package-to-official", *sys.argv[1:]]))
