"""Redis implementations for running many replicas: shared limits, budgets, key invalidation."""

__all__: list[str] = []
