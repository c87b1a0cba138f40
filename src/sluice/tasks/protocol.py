"""What the tasks subsystem asks of each protocol (Midjourney, Suno, video): pure functions.

A protocol turns a stored task into the upstream's poll request, the upstream's poll answer or
callback into a ``Snapshot``, and a stored task into the client's task object. It performs no
I/O: the poller and the routes do.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sluice.core import UpstreamRequest
from sluice.providers.configs import ChannelConfig
from sluice.tasks.model import Snapshot, TaskRow

__all__ = ["Links", "TaskProtocol"]


@dataclass(frozen=True, slots=True)
class Links:
    """How result URLs reach clients: as the upstream gave them, or proxied through Sluice at
    ``{base}/tasks/{id}/content/{n}?sig=…`` (signed, so links cannot be forged or enumerated)."""

    proxy: bool
    base: str | None  # Sluice's public base URL; None: pass through (no address to give)
    secret: bytes

    def url(self, task_id: str, index: int, upstream_url: str) -> str:
        if not self.proxy or self.base is None or not upstream_url:
            return upstream_url
        sig = content_signature(self.secret, task_id, index)
        return f"{self.base}/tasks/{task_id}/content/{index}?sig={sig}"


def content_signature(secret: bytes, task_id: str, index: int) -> str:
    message = f"content:{task_id}:{index}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


class TaskProtocol(Protocol):
    kind: str

    def poll_request(self, config: ChannelConfig, row: TaskRow) -> UpstreamRequest: ...

    def parse_poll(self, row: TaskRow, status: int, body: bytes) -> Snapshot | None:
        """The task as the upstream sees it; None when the answer says nothing usable (an
        error status, a body that is not the task): the poller tries again later."""
        ...

    def parse_callback(self, row: TaskRow, body: bytes) -> Snapshot | None: ...

    def render(self, row: TaskRow, links: Links) -> dict[str, Any]:
        """The client's task object: Sluice's ids, never the upstream's."""
        ...

    def result_urls(self, row: TaskRow) -> list[str]:
        """The upstream's result URLs, numbered as ``Links.url`` numbers them."""
        ...

    def upstream_headers(self, config: ChannelConfig) -> Mapping[str, str]:
        """Headers for fetching result content from the upstream (its auth, if it needs it)."""
        ...
