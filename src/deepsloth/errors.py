"""The one exception type users see: the CLI prints its message on one line and exits 2."""


class DeepslothError(Exception):
    """A problem with the user's input (file, layout, option) rather than a bug."""
