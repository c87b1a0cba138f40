"""Metrics (Prometheus) and structured access logs."""

__all__: list[str] = []
