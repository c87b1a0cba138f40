"""An OpenAI chat completion -> a Responses API ``response`` object (pure, no I/O).

The answer's text becomes one ``message`` output item (``output_text``, plus ``refusal`` when
the model refused), each tool call a ``function_call`` item; a reply cut by its token limit is
``incomplete`` with the reason ``max_output_tokens``. Usage is the upstream's, renamed
(``input_tokens``, ``output_tokens``, cached and reasoning details); when the upstream reported
none, the locally counted prompt and the counted output text stand in, as they are what is
billed. The request fields a Response repeats come from ``ResponsesRequest.echo``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sluice.protocol.responses_request import new_item_id

__all__ = [
    "ResponseContext",
    "response_object",
    "response_status",
    "response_usage",
    "to_response",
    "message_item",
    "function_call_item",
]


@dataclass(frozen=True, slots=True)
class ResponseContext:
    response_id: str
    model: str  # the model name the client asked for
    echo: dict[str, Any]  # ResponsesRequest.echo
    input_tokens_estimate: int  # counted locally, used until/unless the upstream reports usage
    count_text: Callable[[str], int]
    created_at: int = field(default_factory=lambda: int(time.time()))


def response_object(
    context: ResponseContext,
    status: str,
    output: list[dict[str, Any]],
    *,
    usage: dict[str, Any] | None = None,
    incomplete_reason: str | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ``response`` object in any state (the stream's first events carry one too)."""
    response: dict[str, Any] = {
        "id": context.response_id,
        "object": "response",
        "created_at": context.created_at,
        "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": (
            {"reason": incomplete_reason} if incomplete_reason is not None else None
        ),
        "model": context.model,
        "output": output,
        **context.echo,
    }
    if usage is not None:
        response["usage"] = usage
    return response


def response_status(finish_reason: Any) -> tuple[str, str | None]:
    """(status, incomplete reason) for a chat ``finish_reason``."""
    if finish_reason == "length":
        return "incomplete", "max_output_tokens"
    if finish_reason == "content_filter":
        return "incomplete", "content_filter"
    return "completed", None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _detail(usage: dict[str, Any], group: str, name: str) -> int:
    details = usage.get(group)
    return _int(details.get(name)) if isinstance(details, dict) else 0


def response_usage(usage: Any, context: ResponseContext, output_text: str) -> dict[str, Any]:
    """Responses usage from chat usage; the local counts when the upstream reported none."""
    if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
        prompt = _int(usage.get("prompt_tokens"))
        completion = _int(usage.get("completion_tokens"))
        cached = _detail(usage, "prompt_tokens_details", "cached_tokens")
        cache_write = _detail(usage, "prompt_tokens_details", "cache_write_tokens")
        reasoning = _detail(usage, "completion_tokens_details", "reasoning_tokens")
    else:
        prompt = context.input_tokens_estimate
        completion = context.count_text(output_text) if output_text else 0
        cached = cache_write = reasoning = 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": cache_write},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(
    item_id: str, text: str | None, refusal: str | None, status: str
) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append(output_text_part(text))
    if refusal is not None:
        content.append({"type": "refusal", "refusal": refusal})
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def function_call_item(
    item_id: str,
    call_id: str,
    name: str,
    arguments: str,
    status: str,
    extra_content: dict[str, Any] | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }
    if extra_content:
        # Provider data the call must be replayed with (Gemini's thought signature, which
        # Gemini 3 requires back): kept on the item, returned to the upstream with it.
        item["extra_content"] = extra_content
    return item


def _function_calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        arguments = function.get("arguments")
        call_id = call.get("id")
        extra = call.get("extra_content")
        items.append(
            function_call_item(
                new_item_id("function_call"),
                call_id if isinstance(call_id, str) and call_id else new_item_id("call"),
                function["name"],
                arguments if isinstance(arguments, str) else "{}",
                "completed",
                extra if isinstance(extra, dict) else None,
            )
        )
    return items


def to_response(completion: Any, context: ResponseContext) -> dict[str, Any]:
    """A ``response`` object from a ``chat.completion``; tolerant of sparse upstream bodies."""
    completion = completion if isinstance(completion, dict) else {}
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    choice = choice if isinstance(choice, dict) else {}
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    status, reason = response_status(choice.get("finish_reason"))
    text = message.get("content")
    text = text if isinstance(text, str) and text else None
    refusal = message.get("refusal")
    refusal = refusal if isinstance(refusal, str) and refusal else None
    output: list[dict[str, Any]] = []
    if text is not None or refusal is not None:
        item_status = "incomplete" if status == "incomplete" else "completed"
        output.append(message_item(new_item_id("message"), text, refusal, item_status))
    calls = _function_calls(message)
    output.extend(calls)
    counted = (text or "") + (refusal or "") + "".join(c["name"] + c["arguments"] for c in calls)
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str):
        counted += reasoning  # output the upstream bills for, though not shown
    usage = response_usage(completion.get("usage"), context, counted)
    return response_object(context, status, output, usage=usage, incomplete_reason=reason)
