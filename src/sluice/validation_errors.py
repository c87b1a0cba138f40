"""Split a msgspec validation message into what went wrong and where, for config and admin."""

from __future__ import annotations

import re

import msgspec

__all__ = ["split_validation_error"]

_LOCATED = re.compile(r"^(?P<msg>.*) - at `\$\.?(?P<path>[^`]*)`$", re.S)


def split_validation_error(exc: msgspec.ValidationError) -> tuple[str, str | None]:
    """``Expected `int` >= 1 - at `$.channels[0].weight` `` -> the message and
    ``channels[0].weight``; the path is ``""`` for the document itself and None when msgspec
    gave no location (an unknown field, a body that is not an object)."""
    text = str(exc)
    match = _LOCATED.match(text)
    if match is None:
        return text, None
    return match["msg"], match["path"]
