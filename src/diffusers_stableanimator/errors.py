"""The package's error type for problems with the user's input, files or setup.

Commands print a `StableAnimatorError` as one line (`stableanimator <command>: error: ...`) and exit with status 2;
Python callers catch it like any `ValueError`. Its message says what was wrong and what to do, in the words of
the interface the user typed (option names on the command line, argument names in Python).
"""


class StableAnimatorError(ValueError):
    """A problem with the user's input, files or setup, explained in one line."""
