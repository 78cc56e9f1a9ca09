"""`python -m hf_smallllm_cli`: the same as the `hf-smallllm` command."""

import sys

from . import main

sys.exit(main())
