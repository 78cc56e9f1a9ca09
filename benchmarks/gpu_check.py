"""GPU verification in one run: `python benchmarks/gpu_check.py --help` (see hf_smallllm/testing/gpu_check.py).
On a lent GPU box use `bash benchmarks/gpu_check.sh`, which first installs the carried wheels."""

import sys

from hf_smallllm.testing.gpu_check import main

if __name__ == "__main__":
    sys.exit(main())
