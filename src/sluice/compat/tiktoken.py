"""tiktoken: drop the Python copy of an encoding's rank table.

Touches ``Encoding._mergeable_ranks``. Why: tiktoken keeps the ranks twice, in its Rust core
(used for encoding) and as a Python dict it needs only to pickle the encoding, which Sluice
never does. Emptying the dict saves its memory in every worker. If tiktoken renames the attribute
the saving is silently lost (nothing breaks); if the Rust core ever reads the Python dict,
encoding would break; ``tests/test_compat.py`` checks both.
"""

from __future__ import annotations

from typing import Any

__all__ = ["drop_python_ranks"]


def drop_python_ranks(encoding: Any) -> bool:
    """Empty the Python rank table; False when this tiktoken keeps it elsewhere."""
    if isinstance(getattr(encoding, "_mergeable_ranks", None), dict):
        encoding._mergeable_ranks = {}
        return True
    return False
