"""Responses API request -> chat completions body: what each field becomes, and what is refused
(status 400 with OpenAI's ``param`` path and code)."""

from __future__ import annotations

from typing import Any

import pytest

from sluice.errors import InvalidRequest
from sluice.protocol.responses_request import (
    BUILTIN_TOOL_TYPES,
    previous_response_id_of,
    to_chat_request,
)
from tests.openapi_schema import validate_openai

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}
CHAT_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": WEATHER["parameters"],
        "strict": True,
    },
}


def chat_of(**params: Any) -> dict[str, Any]:
    return to_chat_request({"model": "m", **params}).chat


# (Responses fields, the chat body's fields besides model) -- each line one translation rule.
CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("string input", {"input": "hi"}, {"messages": [{"role": "user", "content": "hi"}]}),
    (
        "instructions lead as a system message",
        {"input": "hi", "instructions": "Be terse."},
        {"messages": [{"role": "system", "content": "Be terse."},
                      {"role": "user", "content": "hi"}]},
    ),
    (
        "easy message with string content and no type",
        {"input": [{"role": "user", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "hello"}]},
    ),
    (
        "developer and system messages become system",
        {"input": [{"role": "developer", "content": "d"}, {"role": "system", "content": "s"},
                   {"role": "user", "content": "u"}]},
        {"messages": [{"role": "system", "content": "d"}, {"role": "system", "content": "s"},
                      {"role": "user", "content": "u"}]},
    ),
    (
        "input_text parts are joined",
        {"input": [{"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "one"}, {"type": "input_text", "text": "two"}]}]},
        {"messages": [{"role": "user", "content": "one\n\ntwo"}]},
    ),
    (
        "images become image_url parts",
        {"input": [{"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "low"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw==",
             "detail": "auto"},
        ]}]},
        {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}},
            {"type": "image_url",
             "image_url": {"url": "data:image/png;base64,iVBORw==", "detail": "auto"}},
        ]}]},
    ),
    (
        "assistant output_text and refusal parts",
        {"input": [{"type": "message", "role": "assistant", "status": "completed", "id": "msg_1",
                    "content": [{"type": "output_text", "text": "Hi", "annotations": []},
                                {"type": "refusal", "refusal": "No."}]}]},
        {"messages": [{"role": "assistant", "content": "Hi\n\nNo."}]},
    ),
    (
        "function call and its output",
        {"input": [
            {"role": "user", "content": "Weather?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather",
             "arguments": '{"city":"Paris"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
        ], "tools": [WEATHER]},
        {"messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        ], "tools": [CHAT_WEATHER]},
    ),
    (
        "parallel calls after assistant text form one assistant turn",
        {"input": [
            {"role": "assistant", "content": "Checking."},
            {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "b", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "a", "output": [
                {"type": "input_text", "text": "x"}, {"type": "input_text", "text": "y"}]},
            {"type": "function_call_output", "call_id": "b", "output": "z"},
        ]},
        {"messages": [
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "a", "content": "x\n\ny"},
            {"role": "tool", "tool_call_id": "b", "content": "z"},
        ]},
    ),
    (
        "reasoning items are not shown to a chat model",
        {"input": [{"type": "reasoning", "id": "rs_1", "summary": []},
                   {"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "hi"}]},
    ),
    (
        "a tool without parameters gets an empty object schema",
        {"input": "hi", "tools": [{"type": "function", "name": "now", "parameters": None,
                                   "strict": None}]},
        {"messages": [{"role": "user", "content": "hi"}], "tools": [
            {"type": "function", "function": {
                "name": "now", "parameters": {"type": "object", "properties": {}}}}]},
    ),
    (
        "tool_choice modes",
        {"input": "hi", "tools": [WEATHER], "tool_choice": "required"},
        {"messages": [{"role": "user", "content": "hi"}], "tools": [CHAT_WEATHER],
         "tool_choice": "required"},
    ),
    (
        "tool_choice naming a function (Responses shape)",
        {"input": "hi", "tools": [WEATHER],
         "tool_choice": {"type": "function", "name": "get_weather"}},
        {"messages": [{"role": "user", "content": "hi"}], "tools": [CHAT_WEATHER],
         "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    ),
    (
        "tool_choice naming a function (chat shape, accepted too)",
        {"input": "hi", "tools": [WEATHER],
         "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        {"messages": [{"role": "user", "content": "hi"}], "tools": [CHAT_WEATHER],
         "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    ),
    (
        "allowed_tools narrows the tools offered",
        {"input": "hi", "tools": [WEATHER, {**WEATHER, "name": "other"}],
         "tool_choice": {"type": "allowed_tools", "mode": "required",
                         "tools": [{"type": "function", "name": "get_weather"}]}},
        {"messages": [{"role": "user", "content": "hi"}], "tools": [CHAT_WEATHER],
         "tool_choice": "required"},
    ),
    (
        "tool_choice and parallel_tool_calls are dropped without tools",
        {"input": "hi", "tool_choice": "none", "parallel_tool_calls": False},
        {"messages": [{"role": "user", "content": "hi"}]},
    ),
    (
        "parallel_tool_calls with tools",
        {"input": "hi", "tools": [WEATHER], "parallel_tool_calls": False},
        {"messages": [{"role": "user", "content": "hi"}], "tools": [CHAT_WEATHER],
         "parallel_tool_calls": False},
    ),
    (
        "json_schema format",
        {"input": "hi", "text": {"format": {"type": "json_schema", "name": "city",
                                            "schema": {"type": "object"}, "strict": True,
                                            "description": "A city."}}},
        {"messages": [{"role": "user", "content": "hi"}], "response_format": {
            "type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"},
                                                   "description": "A city.", "strict": True}}},
    ),
    (
        "json_object format and verbosity",
        {"input": "hi", "text": {"format": {"type": "json_object"}, "verbosity": "low"}},
        {"messages": [{"role": "user", "content": "hi"}], "verbosity": "low",
         "response_format": {"type": "json_object"}},
    ),
    (
        "text format is the default",
        {"input": "hi", "text": {"format": {"type": "text"}}},
        {"messages": [{"role": "user", "content": "hi"}]},
    ),
    (
        "sampling, limits, reasoning and the end user",
        {"input": "hi", "temperature": 0.2, "top_p": 0.9, "max_output_tokens": 64,
         "reasoning": {"effort": "high", "summary": "auto"}, "user": "u-1",
         "safety_identifier": "s-1", "prompt_cache_key": "k"},
        {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.2, "top_p": 0.9,
         "max_completion_tokens": 64, "reasoning_effort": "high", "user": "u-1",
         "safety_identifier": "s-1", "prompt_cache_key": "k"},
    ),
    (
        "fields with no chat meaning are not forwarded",
        {"input": "hi", "store": False, "metadata": {"a": "b"}, "include": [],
         "truncation": "auto", "max_tool_calls": 3, "reasoning": {"summary": "auto"}},
        {"messages": [{"role": "user", "content": "hi"}]},
    ),
    (
        "stream asks the upstream for usage",
        {"input": "hi", "stream": True},
        {"messages": [{"role": "user", "content": "hi"}], "stream": True,
         "stream_options": {"include_usage": True}},
    ),
]  # fmt: skip


@pytest.mark.parametrize(("params", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_translation(params: dict[str, Any], expected: dict[str, Any]) -> None:
    assert chat_of(**params) == {"model": "m", **expected}


def test_previous_items_come_first_and_instructions_lead() -> None:
    history = [
        {"type": "message", "id": "msg_a", "status": "completed", "role": "user",
         "content": [{"type": "input_text", "text": "My name is Ada."}]},
        {"type": "message", "id": "msg_b", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "Hello Ada.", "annotations": [],
                      "logprobs": []}]},
    ]  # fmt: skip
    request = to_chat_request(
        {"model": "m", "input": "Name?", "instructions": "Be brief."}, history
    )
    assert request.chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "Name?"},
    ]
    # Stored: the history first, then this request's items with fresh ids.
    assert request.input_items[:2] == history
    (new,) = request.input_items[2:]
    assert new["id"].startswith("msg_") and new["status"] == "completed"
    assert new["content"] == [{"type": "input_text", "text": "Name?"}]


def test_stored_input_items_are_spec_resources() -> None:
    request = to_chat_request(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "Let me look."},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "sunny"},
            ],
        }
    )
    prefixes = [item["id"].split("_")[0] for item in request.input_items]
    assert prefixes == ["msg", "msg", "fc", "fco"]
    page = {"object": "list", "data": request.input_items, "first_id": "a", "last_id": "b",
            "has_more": False}  # fmt: skip
    validate_openai("ResponseItemList", page)


def test_echo_defaults_and_store() -> None:
    request = to_chat_request({"model": "m", "input": "hi"})
    assert request.store is True and request.stream is False
    assert request.echo["tool_choice"] == "auto" and request.echo["tools"] == []
    assert request.echo["text"] == {"format": {"type": "text"}}
    assert request.echo["parallel_tool_calls"] is True and request.echo["metadata"] == {}
    named = to_chat_request(
        {"model": "m", "input": "hi", "tools": [WEATHER], "store": False,
         "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    )  # fmt: skip
    assert named.store is False
    # The echo is always the Responses shape, whichever shape was sent.
    assert named.echo["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert named.echo["tools"] == [WEATHER]


@pytest.mark.parametrize("kind", sorted(BUILTIN_TOOL_TYPES))
def test_builtin_tools_are_refused(kind: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        chat_of(input="hi", tools=[WEATHER, {"type": kind}])
    error = caught.value
    assert error.http_status == 400 and error.code == "unsupported_tool"
    assert error.param == "tools[1].type" and kind in error.message


def test_builtin_tool_choice_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        chat_of(input="hi", tools=[WEATHER], tool_choice={"type": "web_search_preview"})
    assert caught.value.code == "unsupported_tool" and caught.value.param == "tool_choice.type"


# (fields, param, code) of requests OpenAI would refuse, or this gateway cannot serve.
REFUSED: list[tuple[dict[str, Any], str | None, str]] = [
    ({"model": None, "input": "hi"}, "model", "missing_required_parameter"),
    ({"model": 5, "input": "hi"}, "model", "invalid_type"),
    ({}, "input", "missing_required_parameter"),
    ({"input": {"role": "user"}}, "input", "invalid_type"),
    ({"input": ["hi"]}, "input[0]", "invalid_type"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role", "invalid_value"),
    ({"input": [{"role": "user"}]}, "input[0].content", "missing_required_parameter"),
    ({"input": [{"role": "user", "content": 5}]}, "input[0].content", "invalid_type"),
    ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
     "input[0].content[0].type", "invalid_value"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].content[0].type", "unsupported_content"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1",
                                              "detail": "auto"}]}]},
     "input[0].content[0].file_id", "unsupported_content"),
    ({"input": [{"role": "assistant", "content": [{"type": "input_image",
                                                   "image_url": "https://x.test/a.png"}]}]},
     "input[0].content", "invalid_value"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]},
     "input[0].arguments", "missing_required_parameter"),
    ({"input": [{"type": "function_call_output", "output": "x"}]},
     "input[0].call_id", "missing_required_parameter"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]", "unsupported_item"),
    ({"input": [{"type": "computer_call_output", "call_id": "c"}]}, "input[0].type",
     "unsupported_item"),
    ({"input": "hi", "tools": {}}, "tools", "invalid_type"),
    ({"input": "hi", "tools": [{"type": "function"}]}, "tools[0].name",
     "missing_required_parameter"),
    ({"input": "hi", "tools": [{"type": "custom", "name": "x"}]}, "tools[0].type",
     "unsupported_tool"),
    ({"input": "hi", "tools": [WEATHER], "tool_choice": "any"}, "tool_choice", "invalid_value"),
    ({"input": "hi", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
     "tool_choice.name", "invalid_value"),
    ({"input": "hi", "max_output_tokens": 8}, "max_output_tokens", "integer_below_min_value"),
    ({"input": "hi", "max_output_tokens": "8"}, "max_output_tokens", "invalid_type"),
    ({"input": "hi", "temperature": "hot"}, "temperature", "invalid_type"),
    ({"input": "hi", "stream": "yes"}, "stream", "invalid_type"),
    ({"input": "hi", "instructions": ["a"]}, "instructions", "invalid_type"),
    ({"input": "hi", "text": {"format": {"type": "json_schema", "schema": {}}}},
     "text.format.name", "missing_required_parameter"),
    ({"input": "hi", "text": {"format": {"type": "xml"}}}, "text.format.type", "invalid_value"),
    ({"input": "hi", "reasoning": {"effort": "max"}}, "reasoning.effort", "invalid_value"),
    ({"input": "hi", "metadata": {"k": 1}}, "metadata.k", "invalid_value"),
    ({"input": "hi", "background": True}, "background", "unsupported_parameter"),
    ({"input": "hi", "conversation": "conv_1"}, "conversation", "unsupported_parameter"),
    ({"input": "hi", "prompt": {"id": "pmpt_1"}}, "prompt", "unsupported_parameter"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "param", "code"), REFUSED)
def test_refusals_name_the_field(fields: dict[str, Any], param: str | None, code: str) -> None:
    params = {"model": "m", **fields}
    if params["model"] is None:
        del params["model"]
    with pytest.raises(InvalidRequest) as caught:
        to_chat_request(params)
    error = caught.value
    assert error.http_status == 400 and error.error_type == "invalid_request_error"
    assert (error.param, error.code) == (param, code), error.message


def test_body_must_be_an_object() -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_chat_request(["model"])
    assert caught.value.code == "invalid_request_body"


@pytest.mark.parametrize(
    ("params", "expected"),
    [({"previous_response_id": "resp_1"}, "resp_1"), ({}, None), ("x", None)],
)
def test_previous_response_id(params: Any, expected: str | None) -> None:
    assert previous_response_id_of(params) == expected


@pytest.mark.parametrize(("value", "code"), [(5, "invalid_type"), ("", "empty_string")])
def test_previous_response_id_refused(value: Any, code: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        previous_response_id_of({"previous_response_id": value})
    assert caught.value.param == "previous_response_id" and caught.value.code == code


def test_sampling_ranges() -> None:
    for name, value in (("temperature", 2.5), ("top_p", -0.1)):
        with pytest.raises(InvalidRequest) as caught:
            chat_of(input="hi", **{name: value})
        assert caught.value.param == name and caught.value.code == "invalid_value"
