"""Model benchmark suite: our classes vs transformers' own, interleaved in one process (see hf_smallllm.bench)."""

import sys

from hf_smallllm.bench.runner import main

if __name__ == "__main__":
    sys.exit(main())
