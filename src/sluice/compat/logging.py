"""logging (standard library): skip the caller lookup made for every log record.

Touches ``logging._srcfile``: the logging HOWTO ("Optimization") documents setting it to None
so records are built without walking the stack for the caller's file and line, which the
access log never prints. There is no public switch. If a Python release drops it, records get
slower to build, nothing breaks; ``tests/test_compat.py`` fails first.
"""

from __future__ import annotations

import logging

__all__ = ["skip_caller_lookup"]


def skip_caller_lookup() -> None:
    logging._srcfile = None
