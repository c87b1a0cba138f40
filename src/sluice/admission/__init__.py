"""Admission against a key's limits: one protocol (``backend.py``), in-process (``local.py``)
and shared through Redis (``shared.py``)."""
