"""The one exception type that means "the user's input is wrong": exit code 2, no run created."""


class BadInputError(Exception):
    """A config value, a data path or a data file the user must fix; the message is one line."""
