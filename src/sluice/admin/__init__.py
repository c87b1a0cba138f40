"""Operator API under /admin (Bearer admin key)."""
