"""Model benchmark suite: our classes vs transformers' own, interleaved in one process (see hf_smallllm.bench).

The same as `hf-smallllm bench`; `--help` lists the options."""

import sys

from hf_smallllm_cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
