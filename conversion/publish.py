"""Publish a training run to the Hub: `python conversion/publish.py RUN_DIR owner/name [options]`.

A thin front over `hf-smallllm publish` (hf_smallllm_cli/publish.py); `--help` lists the options.
"""

import sys

from hf_smallllm_cli import main

if __name__ == "__main__":
    sys.exit(main(["publish", *sys.argv[1:]]))
