"""Persistence: keys and usage rows in SQLite (embedded) or PostgreSQL."""
