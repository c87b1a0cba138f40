"""Chat completion -> Response object: output items, status, usage, echo; every result is
checked against the spec's ``Response`` schema."""

from __future__ import annotations

from typing import Any

import pytest

from sluice.protocol.responses_request import to_chat_request
from sluice.protocol.responses_response import ResponseContext, to_response
from tests.openapi_schema import validate_openai


def words(text: str) -> int:
    return len(text.split())


def context(**params: Any) -> ResponseContext:
    request = to_chat_request({"model": "m", "input": "hi", **params})
    return ResponseContext("resp_test", "m", request.echo, 9, words, created_at=1_700_000_000)


def completion(
    message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "upstream-name",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


USAGE = {
    "prompt_tokens": 20,
    "completion_tokens": 7,
    "total_tokens": 27,
    "prompt_tokens_details": {"cached_tokens": 5},
    "completion_tokens_details": {"reasoning_tokens": 3},
}


def test_text_answer() -> None:
    response = to_response(
        completion({"role": "assistant", "content": "Hi there."}, usage=USAGE), context()
    )
    validate_openai("Response", response)
    assert response["id"] == "resp_test" and response["object"] == "response"
    assert response["status"] == "completed" and response["model"] == "m"
    assert response["created_at"] == 1_700_000_000 and response["completed_at"] >= 1_700_000_000
    (item,) = response["output"]
    assert (
        item["type"] == "message" and item["role"] == "assistant" and item["id"].startswith("msg_")
    )
    assert item["status"] == "completed"
    assert item["content"] == [
        {"type": "output_text", "text": "Hi there.", "annotations": [], "logprobs": []}
    ]
    assert response["usage"] == {
        "input_tokens": 20,
        "input_tokens_details": {"cached_tokens": 5, "cache_write_tokens": 0},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 27,
    }
    assert response["error"] is None and response["incomplete_details"] is None


def test_tool_calls_become_function_call_items() -> None:
    message = {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_b", "type": "function",
             "function": {"name": "get_time", "arguments": "{}"}},
        ],
    }  # fmt: skip
    response = to_response(completion(message, "tool_calls", USAGE), context())
    validate_openai("Response", response)
    kinds = [item["type"] for item in response["output"]]
    assert kinds == ["message", "function_call", "function_call"]
    first = response["output"][1]
    assert first["call_id"] == "call_a" and first["name"] == "get_weather"
    assert first["arguments"] == '{"city":"Paris"}' and first["id"].startswith("fc_")
    assert first["status"] == "completed"
    assert response["status"] == "completed"


def test_cut_by_length_is_incomplete() -> None:
    response = to_response(
        completion({"role": "assistant", "content": "Hello from"}, "length", USAGE),
        context(max_output_tokens=16),
    )
    validate_openai("Response", response)
    assert response["status"] == "incomplete" and response["completed_at"] is None
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"
    assert response["max_output_tokens"] == 16


def test_content_filter_is_incomplete() -> None:
    response = to_response(completion({"role": "assistant", "content": ""}, "content_filter"),
                           context())  # fmt: skip
    validate_openai("Response", response)
    assert response["incomplete_details"] == {"reason": "content_filter"}
    assert response["output"] == []


def test_refusal_part() -> None:
    message = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    response = to_response(completion(message), context())
    validate_openai("Response", response)
    assert response["output"][0]["content"] == [
        {"type": "refusal", "refusal": "I can't help with that."}
    ]


def test_no_upstream_usage_counts_locally() -> None:
    message = {
        "role": "assistant",
        "content": "one two three",
        "reasoning_content": "four five",
        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{} x"}}],
    }
    response = to_response(completion(message), context())
    validate_openai("Response", response)
    usage = response["usage"]
    # The prompt as counted at admission; the output as counted from what was generated.
    assert usage["input_tokens"] == 9
    assert usage["output_tokens"] == words("one two three" + "f{} x" + "four five")
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_echo_of_request_fields() -> None:
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}
    ctx = context(
        instructions="Be brief.",
        tools=[tool],
        tool_choice="required",
        temperature=0.3,
        top_p=0.5,
        parallel_tool_calls=False,
        metadata={"team": "a"},
        text={"format": {"type": "json_object"}},
        reasoning={"effort": "low"},
        previous_response_id="resp_prev",
        store=False,
        user="u",
    )
    response = to_response(completion({"role": "assistant", "content": "{}"}), ctx)
    validate_openai("Response", response)
    expected = {
        "instructions": "Be brief.",
        "tools": [tool],
        "tool_choice": "required",
        "temperature": 0.3,
        "top_p": 0.5,
        "parallel_tool_calls": False,
        "metadata": {"team": "a"},
        "text": {"format": {"type": "json_object"}},
        "reasoning": {"effort": "low", "summary": None},
        "previous_response_id": "resp_prev",
        "store": False,
        "user": "u",
    }
    assert {name: response[name] for name in expected} == expected


@pytest.mark.parametrize("body", [{}, {"choices": []}, {"choices": [None]}, [], "x"])
def test_sparse_bodies_still_make_a_valid_response(body: Any) -> None:
    response = to_response(body, context())
    validate_openai("Response", response)
    assert response["output"] == [] and response["usage"]["input_tokens"] == 9


def test_provider_extra_content_stays_on_the_call() -> None:
    extra = {"google": {"thought_signature": "sig=="}}
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"},
         "extra_content": extra}]}  # fmt: skip
    response = to_response(completion(message, "tool_calls"), context())
    validate_openai("Response", response)
    assert response["output"][0]["extra_content"] == extra
