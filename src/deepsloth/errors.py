"""The one exception type users see (the CLI prints its message on one line and exits 2), and the one
warning type (the CLI prints it as one `deepsloth: warning: ...` line and goes on)."""


class DeepslothError(ValueError):
    """A problem with the user's input (file, layout, option, value) rather than a bug.

    It is a `ValueError`, so library callers that catch bad arguments the usual way catch it too.
    """


class DeepslothWarning(RuntimeWarning):
    """Something works but is likely not what the user wants (a slow precision on this hardware)."""
