"""Reading a stream on after its client left: the upstream's usage is the cost of what it made.

A client that closes a stream before the usage chunk would otherwise pay only for the text it
was shown, while the operator pays the upstream for everything generated — reasoning, the rest
of the answer, and a prompt (tool schemas, ``response_format``, images, files) only estimated
locally. A reasoning model told to think hard, answer in five tokens, and then dropped, costs
thousands of tokens. So the session hands its translator and upstream reader here: frames are
translated, to take the usage the translator finds, and dropped; nothing goes to the gone
client, and the text kept for local counting is forgotten after every read, so a drain holds no
more than one read's worth of frames. ``docs/reliability.md`` has the billing rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp

from sluice.core import StreamTranslator
from sluice.providers.base import DONE_FRAME

__all__ = ["read_for_usage"]


async def read_for_usage(
    translator: StreamTranslator, chunks: AsyncIterator[bytes], limit_s: float
) -> bool:
    """Feed the rest of the upstream stream to ``translator`` for at most ``limit_s`` seconds.

    True when the stream reached its end, so the translator's usage (if the upstream reports
    any) is final; False when it was cut (the limit, the channel's idle or total timeout, a
    broken connection), so any usage seen so far is only a lower bound.
    """
    if limit_s <= 0:
        return False
    try:
        async with asyncio.timeout(limit_s):
            async for data in chunks:
                frames = translator.feed(data)
                translator.forget_delivered()
                if translator.failure is not None or DONE_FRAME in frames:
                    return True
        translator.close()  # the upstream's end: a Gemini stream's usage is final only here
        translator.forget_delivered()
        return True
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False
