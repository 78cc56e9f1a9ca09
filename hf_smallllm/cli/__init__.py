"""`hf_smallllm.cli`: an alias of the `hf_smallllm_cli` package, which holds the `hf-smallllm` command.

The command line lives outside this package so that `hf-smallllm --help` does not run `hf_smallllm/__init__.py`
(which imports torch and transformers to register the models); see hf_smallllm_cli/__init__.py. Importing this
module is for Python callers that already hold the library: `from hf_smallllm.cli import main`.
"""

from hf_smallllm_cli import build_parser, main

from ..errors import UsageError

__all__ = ["UsageError", "build_parser", "main"]
