"""One exception type for every bad input.

The CLI turns a ``MoesimInputError`` into a single line on stderr and exit code 2,
so every message must name the file/field at fault and say how to fix it.
"""

from typing import NoReturn


class MoesimInputError(Exception):
    """Bad user input: a malformed trace, an unknown scenario key, a missing profile entry..."""


def fail(message: str) -> NoReturn:
    raise MoesimInputError(message)
