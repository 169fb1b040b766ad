"""The one exception type users see: the CLI prints its message on one line and exits 2."""


class DeepslothError(ValueError):
    """A problem with the user's input (file, layout, option, value) rather than a bug.

    It is a `ValueError`, so library callers that catch bad arguments the usual way catch it too.
    """
