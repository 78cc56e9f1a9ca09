#!/usr/bin/env python
"""Thin front over `hf-smallllm convert official-to-package` (same options; see `--help` and docs/conversion.md)."""

import sys

from hf_smallllm_cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "official-to-package", *sys.argv[1:]]))
