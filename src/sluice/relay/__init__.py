"""Relay handlers: admission (key, body, limits, budget), upstream attempts, metering."""
