"""`UsageError`: a mistake in what the user asked for (a bad option, a missing input, a recipe field out of range).

The command line prints a `UsageError` as one line (`hf-smallllm COMMAND: error: ...`) and exits with status 2;
every other exception is a bug and shows its traceback. Library code raises it where it detects the user's mistake,
with a message that names the field or option, the value and what is allowed. The three subclasses are also the
built-in exception a Python caller would expect there (`ValueError`, `FileNotFoundError`, `FileExistsError`), so
`except ValueError` around a library call keeps working. This module imports nothing, so anything may import it.
"""


class UsageError(Exception):
    """A mistake in what the user asked for; the CLI prints it as one line without a traceback (exit status 2)."""


class UsageValueError(UsageError, ValueError):
    """A value the user gave is malformed or out of range (an option, a recipe or config field, a data record)."""


class UsageFileNotFoundError(UsageError, FileNotFoundError):
    """A file or folder the user named does not exist, or does not hold what it must (a model, an adapter)."""


class UsageFileExistsError(UsageError, FileExistsError):
    """An output the user named already exists and replacing it was not asked for."""


__all__ = ["UsageError", "UsageFileExistsError", "UsageFileNotFoundError", "UsageValueError"]
