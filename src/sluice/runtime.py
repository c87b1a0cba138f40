"""Process-level tuning for server workers (never applied to an embedding test process).

Garbage collection: a relay request allocates a few hundred short-lived container objects;
with CPython's default gen-0 threshold (700) the collector runs about once per request and,
under concurrency, keeps promoting in-flight objects and rescanning them, a visible share of
each request's CPU (figures: docs/architecture.md, "The hot path"). Objects built at
start-up (modules, config, tokenizer tables) are frozen out of the collector's sight, and the
young generation is allowed to grow larger before a collection. Reference cycles are still
collected, just less often; memory stays bounded (the soak in bench/ checks RSS growth).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc

from sluice.observability.access_log import flush_access_log

__all__ = ["tune_gc", "flush_logs_forever", "GC_THRESHOLDS"]

GC_THRESHOLDS = (20_000, 20, 50)


def tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    _return_free_memory()


def _return_free_memory() -> None:
    """Give the heap pages freed by start-up (config parsing, tokenizer loading) back to the
    OS; glibc keeps them otherwise, and they would count in every worker's RSS."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return
    trim(0)


async def flush_logs_forever(interval_s: float = 1.0) -> None:
    """Buffered access lines reach the log within a second even when traffic stops."""
    while True:
        await asyncio.sleep(interval_s)
        flush_access_log()
