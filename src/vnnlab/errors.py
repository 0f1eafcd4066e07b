"""The one exception type that means "the user's input is wrong": exit code 2, no run created."""

from typing import Any


class BadInputError(Exception):
    """A config value, a data path or a data file the user must fix; the message is one line."""


def bad_value(key: str, value: Any, allowed: str) -> BadInputError:
    """The one-line message every range check uses: key, value, what is allowed."""
    return BadInputError(f"{key}={value!r} is not allowed: expected {allowed}")
