"""The ``tasks`` section of the config file (a leaf: msgspec and ``config_base`` only, so
``sluice.settings`` can include it without importing the tasks subsystem)."""

from __future__ import annotations

import msgspec

from sluice.config_base import NonNegativeInt, PositiveFloat, PositiveInt, Secret, Strict

__all__ = ["TasksConfig", "DEFAULT_STUCK_AFTER_S"]

# A task still unfinished this long after submission is failed and its reservation released.
DEFAULT_STUCK_AFTER_S = {"midjourney": 3600.0, "suno": 1800.0, "video": 7200.0}


class TasksConfig(Strict, frozen=True):
    # Whether this replica polls unfinished tasks at all (every replica may; a lease in the
    # database makes sure one polls a given task at a time).
    poll: bool = True
    # How often the poller looks for due tasks; each channel sets how often a task is polled.
    tick_s: PositiveFloat = 1.0
    # How long a replica owns a task it claimed for polling; one that dies is replaced after it.
    lease_s: PositiveFloat = 30.0
    # Tasks claimed per tick and polled at once by one replica.
    batch: PositiveInt = 32
    stuck_after_s: dict[str, PositiveFloat] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_STUCK_AFTER_S)
    )
    # Sluice's own address as upstreams and browsers reach it (``https://sluice.example.com``):
    # for upstream callbacks and proxied result URLs in client callbacks. Unset: requests'
    # own base URL is used for result URLs, and upstreams are not asked to call back.
    public_url: str | None = None
    # Signs client callbacks and proxied result links (HMAC-SHA256). Unset: derived from the
    # admin key's hash, which every worker has; set it when replicas must agree without one.
    signing_secret: Secret | None = None
    callback_timeout_s: PositiveFloat = 10.0
    callback_retries: NonNegativeInt = 3
    callback_backoff_s: PositiveFloat = 1.0
    # Client callback URLs may name private, loopback or link-local addresses (tests, or a
    # gateway whose clients all live on the same private network). Off: the SSRF guard refuses.
    allow_private_callback_urls: bool = False
    max_result_bytes: PositiveInt = 4 * 1024 * 1024  # an upstream's task JSON
