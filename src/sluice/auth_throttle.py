"""Failed authentications per client address: past a limit, an address is refused for a while.

Random ``sk-`` strings are free to send and each new one would cost a database read; a guessed
admin key costs nothing to try. Both are bounded here, per client address and worker, in a
bounded map (memory cannot grow with the number of addresses an attacker uses).

The key cache consults this only when it would read the database (``begin``/``end``), so a
request whose key is cached never touches it. An address's loads in flight count against its
limit until they finish, so a burst of concurrent unknown keys cannot all get past the check
before the first failure is recorded. IPv6 addresses are counted per /64 (one host commonly
holds a whole /64), and IPv4-mapped IPv6 addresses as the IPv4 address they carry.
"""

from __future__ import annotations

import ipaddress
import math
import time

from sluice.errors import RateLimited

__all__ = ["FailureThrottle", "Tally", "address_bucket"]

_IPV6_PREFIX = 64
_NO_ADDRESS = "-"  # no peer address (e.g. a Unix socket without a proxy in front): one bucket


def address_bucket(address: str | None) -> str:
    """The unit failures are counted by: the IPv4 address, or the IPv6 /64."""
    if not address:
        return _NO_ADDRESS
    if ":" not in address:
        return address
    try:
        parsed = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return address
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(ipaddress.IPv6Network((parsed, _IPV6_PREFIX), strict=False))


class Tally:
    """One address's failures in its current window and its database reads in flight."""

    __slots__ = ("bucket", "window_end", "failures", "pending")

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.window_end = 0.0  # monotonic; the window opens at the first failure
        self.failures = 0
        self.pending = 0


class FailureThrottle:
    """At most ``max_failures`` failed authentications per address per ``window_s``.

    ``max_failures`` 0 turns the throttle off. Past the limit the address gets 429
    ``too_many_failed_auth`` (with ``Retry-After``) until its window ends.
    """

    def __init__(self, max_failures: int, window_s: float, max_addresses: int) -> None:
        self._max = max_failures
        self._window_s = window_s
        self._max_addresses = max_addresses
        self._tallies: dict[str, Tally] = {}

    @property
    def enabled(self) -> bool:
        return self._max > 0

    def check(self, address: str | None) -> None:
        """Raise ``RateLimited`` if ``address`` has used up its failures."""
        if self._max:
            tally = self._tallies.get(address_bucket(address))
            if tally is not None:
                self._refuse_if_over(tally, time.monotonic())

    def record_failure(self, address: str | None) -> None:
        if self._max:
            self._failed(self._tally(address_bucket(address)), time.monotonic())

    def begin(self, address: str | None) -> Tally | None:
        """Before a database read for a presented key: refuse, or count the read in flight."""
        if not self._max:
            return None
        tally = self._tally(address_bucket(address))
        self._refuse_if_over(tally, time.monotonic())
        tally.pending += 1
        return tally

    def end(self, tally: Tally, failed: bool) -> None:
        """After that read: ``failed`` when the key was unknown."""
        tally.pending -= 1
        if failed:
            self._failed(tally, time.monotonic())
        elif tally.failures == 0 and tally.pending == 0:
            # A clean address leaves nothing behind (only the addresses failing are kept).
            if self._tallies.get(tally.bucket) is tally:
                del self._tallies[tally.bucket]

    def __len__(self) -> int:
        return len(self._tallies)

    def _tally(self, bucket: str) -> Tally:
        tally = self._tallies.get(bucket)
        if tally is None:
            if len(self._tallies) >= self._max_addresses:
                # The oldest tracked address goes: bounded memory over perfect memory.
                del self._tallies[next(iter(self._tallies))]
            tally = self._tallies[bucket] = Tally(bucket)
        return tally

    def _refuse_if_over(self, tally: Tally, now: float) -> None:
        if tally.window_end <= now:
            tally.failures = 0
        if tally.failures + tally.pending < self._max:
            return
        # Over by failures: until the window ends; by reads in flight alone: a moment.
        wait = tally.window_end - now if tally.failures else 1.0
        raise RateLimited(
            "Too many failed authentications from your address; retry later.",
            code="too_many_failed_auth",
            headers={"retry-after": str(max(1, math.ceil(wait)))},
        )

    def _failed(self, tally: Tally, now: float) -> None:
        if tally.window_end <= now:
            tally.failures = 0
            tally.window_end = now + self._window_s
        tally.failures += 1
