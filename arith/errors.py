"""User-facing errors: the entry scripts print these as one line and exit with code 2.

Raise them for anything a user can fix (a bad config value, a missing dataset, a corrupt checkpoint);
let genuine bugs raise ordinary exceptions with their traceback.
"""


class ArithError(Exception):
    """Base class: a problem the user can fix; the message names the key or file and what is valid."""


class ConfigError(ArithError):
    pass


class DataError(ArithError):
    pass


class CheckpointError(ArithError):
    pass


def require(condition: bool, message: str, exc: type[ArithError] = ConfigError) -> None:
    if not condition:
        raise exc(message)
