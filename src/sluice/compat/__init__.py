"""Every place Sluice relies on another library's private or undocumented internals.

One module per library, each saying what it touches and why; nothing else in Sluice reaches
into another library's privates. ``tests/test_compat.py`` checks each of them against the
installed version and names the module to fix when a library changes.
"""
