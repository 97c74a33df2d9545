"""Errors that the CLI turns into one clear line instead of a traceback."""


class LanternError(Exception):
    """A problem with the user's input or environment, explained in its message."""
