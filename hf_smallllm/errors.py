"""`UsageError`: a mistake in what the user asked for (a bad option, a missing file, a recipe field out of range).

The command line prints a `UsageError` as one line (`hf-smallllm COMMAND: error: ...`) and exits with status 2;
every other exception is a bug and shows its traceback. Library code raises it (or a subclass, e.g. `RecipeError`)
where it detects the user's mistake, with a message that names the field or option, the value and what is allowed.
This module imports nothing, so anything may import it.
"""


class UsageError(Exception):
    """A mistake in what the user asked for; the CLI prints it as one line without a traceback (exit status 2)."""


__all__ = ["UsageError"]
