"""Offline token counting with OpenAI's cl100k_base encoding, shipped inside the package.

The rank file is OpenAI's published ``cl100k_base.tiktoken`` (sha256 checked at load), so no
download ever happens. Why cl100k and not o200k: the count is an estimate for reservations and a
fallback when an upstream reports no usage (billing otherwise uses the upstream's own numbers),
and for that the two are equally good — but o200k's 200k-entry tables take twice the memory in
every worker, and memory per worker is a budget (figures: docs/architecture.md).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
from importlib import resources
from typing import Any

import orjson
import tiktoken

from sluice.compat.tiktoken import drop_python_ranks

__all__ = ["TokenCounter"]

_RANKS_FILE = "cl100k_base.tiktoken.gz"
_RANKS_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# The pre-tokenisation pattern of cl100k_base (public, from OpenAI's encoding definition).
_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}
# OpenAI's accounting: every message costs a few framing tokens, every reply is primed with 3.
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING = 3
# An image part is billed by tiles; without decoding the image assume a high-detail 1024x1024.
_IMAGE_TOKENS = 765


def _load_encoding() -> tiktoken.Encoding:
    raw = gzip.decompress(
        resources.files("sluice.metering.data").joinpath(_RANKS_FILE).read_bytes()
    )
    if hashlib.sha256(raw).hexdigest() != _RANKS_SHA256:
        raise RuntimeError("shipped cl100k_base rank file is corrupt (sha256 mismatch)")
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    encoding = tiktoken.Encoding(
        name="cl100k_base",
        pat_str=_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=_SPECIAL_TOKENS,
    )
    # The Rust core keeps its own copy of the ranks; tiktoken holds on to the Python dict only
    # to pickle the encoding, which Sluice never does. Dropping it saves that memory per worker.
    drop_python_ranks(encoding)
    return encoding


class TokenCounter:
    """Counts tokens; the encoding is loaded once, on first use or by ``warm_up``."""

    def __init__(self) -> None:
        self._encoding: tiktoken.Encoding | None = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        self._get()

    def _get(self) -> tiktoken.Encoding:
        if self._encoding is None:
            with self._lock:
                if self._encoding is None:
                    self._encoding = _load_encoding()
        return self._encoding

    def count_text(self, text: str) -> int:
        if not text:
            return 0
        return len(self._get().encode_ordinary(text))

    def count_content(self, content: Any) -> int:
        """Tokens of a message ``content``: a string or a list of typed parts."""
        if isinstance(content, str):
            return self.count_text(content)
        total = 0
        if isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                kind = part.get("type")
                if kind == "text" and isinstance(part.get("text"), str):
                    total += self.count_text(part["text"])
                elif kind in ("image_url", "input_image", "image"):
                    total += _IMAGE_TOKENS
                elif kind == "input_audio":
                    total += 1000
        return total

    def count_messages(self, messages: list[Any], tools: Any = None) -> int:
        total = _REPLY_PRIMING
        for message in messages:
            if not isinstance(message, dict):
                continue
            total += _TOKENS_PER_MESSAGE
            total += self.count_content(message.get("content"))
            if isinstance(message.get("name"), str):
                total += _TOKENS_PER_NAME + self.count_text(message["name"])
            calls = message.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict):
                        total += self.count_text(str(function.get("name", "")))
                        total += self.count_text(str(function.get("arguments", "")))
        if tools:
            total += self.count_text(orjson.dumps(tools).decode())
        return total

    def count_prompt(self, prompt: Any) -> int:
        """Tokens of a legacy completions ``prompt`` or an embeddings ``input``."""
        if isinstance(prompt, str):
            return self.count_text(prompt)
        if isinstance(prompt, list):
            if all(isinstance(item, int) for item in prompt):
                return len(prompt)
            return sum(self.count_prompt(item) for item in prompt)
        return 0
