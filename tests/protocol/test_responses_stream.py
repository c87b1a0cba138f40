"""Chat chunks -> Responses stream events: the order and content of the event sequence, and
each event valid under its own schema in the spec, numbered from 0 without gaps."""

from __future__ import annotations

from typing import Any

from sluice.protocol.responses_request import to_chat_request
from sluice.protocol.responses_response import ResponseContext
from sluice.protocol.responses_stream import ResponsesStreamWriter
from tests.protocol.response_events import validate_frames

USAGE = {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17,
         "prompt_tokens_details": {"cached_tokens": 2}}  # fmt: skip


def writer(redact: Any = None, **params: Any) -> ResponsesStreamWriter:
    request = to_chat_request({"model": "m", "input": "hi", "stream": True, **params})
    ctx = ResponseContext("resp_s", "m", request.echo, 4, lambda text: len(text.split()))
    return ResponsesStreamWriter(ctx) if redact is None else ResponsesStreamWriter(ctx, redact)


def delta(finish: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": fields, "finish_reason": finish}]}  # fmt: skip


def usage_chunk(usage: dict[str, Any] = USAGE) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [], "usage": usage}


def tool(index: int, call_id: str | None = None, name: str | None = None, args: str = "") -> Any:
    function: dict[str, Any] = {"arguments": args}
    if name is not None:
        function["name"] = name
    call: dict[str, Any] = {"index": index, "function": function}
    if call_id is not None:
        call.update(id=call_id, type="function")
    return delta(tool_calls=[call])


def run(w: ResponsesStreamWriter, chunks: list[dict[str, Any]], done: bool = True) -> list[Any]:
    frames: list[bytes] = []
    for chunk in chunks:
        frames.extend(w.feed_chunk(chunk))
    frames.extend(w.done() if done else w.close())
    frames.extend(w.close())  # after the end: nothing more
    return validate_frames(frames)


def test_text_stream() -> None:
    w = writer()
    chunks = [delta(role="assistant", content=""), delta(content="Hel"), delta(content="lo!"),
              delta("stop"), usage_chunk()]  # fmt: skip
    events = run(w, chunks)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    created = events[0]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    assert created["id"] == "resp_s" and "usage" not in created
    added = events[2]
    assert added["output_index"] == 0 and added["item"]["status"] == "in_progress"
    item_id = added["item"]["id"]
    assert all(e["item_id"] == item_id for e in events[3:8])
    assert [e["delta"] for e in events[4:6]] == ["Hel", "lo!"]
    assert events[6]["text"] == "Hello!"
    assert events[8]["item"]["content"][0]["text"] == "Hello!"
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["output"] == [events[8]["item"]]
    assert final["usage"]["input_tokens"] == 11 and final["usage"]["output_tokens"] == 6
    assert final["usage"]["input_tokens_details"]["cached_tokens"] == 2
    assert w.response == final and w.finished


def test_tool_call_stream() -> None:
    weather: dict[str, Any] = {"type": "function", "name": "get_weather", "parameters": {}}
    w = writer(tools=[weather])
    chunks = [
        delta(role="assistant", content=""),
        tool(0, "call_0", "get_weather"),
        tool(0, args='{"ci'),
        tool(0, args='ty": "Paris"}'),
        delta("tool_calls"),
        usage_chunk(),
    ]
    events = run(w, chunks)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = events[2]["item"]
    assert added["type"] == "function_call" and added["call_id"] == "call_0"
    assert added["name"] == "get_weather" and added["arguments"] == ""
    done = events[5]
    assert done["arguments"] == '{"city": "Paris"}' and done["name"] == "get_weather"
    item = events[6]["item"]
    assert item["status"] == "completed" and item["arguments"] == '{"city": "Paris"}'
    assert events[-1]["response"]["output"] == [item]


def test_text_then_parallel_calls() -> None:
    w = writer()
    chunks = [
        delta(content="Checking."),
        tool(0, "a", "f", "{}"),
        tool(1, "b", "g", '{"x":'),
        tool(1, args="1}"),
        delta("tool_calls"),
    ]
    events = run(w, chunks)
    kinds = [e["type"] for e in events]
    # The message item ends before the first call's item starts.
    assert kinds.index("response.output_item.done") < kinds.index(
        "response.function_call_arguments.delta"
    )
    final = events[-1]["response"]
    assert [(i["type"], i.get("call_id")) for i in final["output"]] == [
        ("message", None), ("function_call", "a"), ("function_call", "b")]  # fmt: skip
    assert final["output"][2]["arguments"] == '{"x":1}'
    indexes = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    assert indexes == [0, 1, 2]


def test_length_cut_is_incomplete() -> None:
    events = run(writer(max_output_tokens=16), [delta(content="Hello"), delta("length")])
    final = events[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["status"] == "incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["response"]["output"][0]["status"] == "incomplete"


def test_refusal_stream() -> None:
    events = run(writer(), [delta(refusal="I can't"), delta(refusal=" help."), delta("stop")])
    kinds = [e["type"] for e in events]
    assert kinds[3:7] == [
        "response.content_part.added",
        "response.refusal.delta",
        "response.refusal.delta",
        "response.refusal.done",
    ]
    assert events[6]["refusal"] == "I can't help."
    content = events[-1]["response"]["output"][0]["content"]
    assert content == [{"type": "refusal", "refusal": "I can't help."}]


def test_upstream_error_fails_the_response_redacted() -> None:
    w = writer(redact=lambda text: text.replace("sk-secret", "sk-***"))
    error = {"error": {"message": "boom with sk-secret", "type": "upstream_error",
                       "code": "upstream_server_error"}}  # fmt: skip
    events = run(w, [delta(content="Hel"), error], done=True)
    final = events[-1]
    assert final["type"] == "response.failed"
    assert final["response"]["status"] == "failed"
    assert final["response"]["error"] == {"code": "server_error", "message": "boom with sk-***"}
    assert w.finished and w.response == final["response"]


def test_rate_limit_error_code() -> None:
    error = {"error": {"message": "slow down", "code": "upstream_rate_limited"}}
    events = run(writer(), [error])
    assert [e["type"] for e in events] == ["response.created", "response.in_progress",
                                           "response.failed"]  # fmt: skip
    assert events[-1]["response"]["error"]["code"] == "rate_limit_exceeded"


def test_stream_ending_without_done_fails() -> None:
    events = run(writer(), [delta(content="Hel")], done=False)
    final = events[-1]
    assert final["type"] == "response.failed"
    assert "ended before it was complete" in final["response"]["error"]["message"]


def test_no_upstream_usage_counts_locally() -> None:
    events = run(writer(), [delta(content="one two "), delta(content="three"), delta("stop")])
    usage = events[-1]["response"]["usage"]
    assert usage["input_tokens"] == 4 and usage["output_tokens"] == 3
    assert usage["total_tokens"] == 7


def test_empty_stream_completes_with_no_output() -> None:
    events = run(writer(), [])
    assert [e["type"] for e in events] == ["response.created", "response.in_progress",
                                           "response.completed"]  # fmt: skip
    assert events[-1]["response"]["output"] == []


def test_other_choices_and_junk_are_ignored() -> None:
    other = {"choices": [{"index": 1, "delta": {"content": "not shown"}}]}
    events = run(writer(), [other, delta(content="shown"), "junk", delta("stop")])  # type: ignore[list-item]
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "shown"


def test_provider_extra_content_stays_on_the_call() -> None:
    """Gemini 3 needs its thought signature back with a replayed call: it rides on the item."""
    extra = {"google": {"thought_signature": "sig=="}}
    header = tool(0, "call_g", "f")
    header["choices"][0]["delta"]["tool_calls"][0]["extra_content"] = extra
    events = run(writer(), [header, tool(0, args="{}"), delta("tool_calls")])
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert added["item"]["extra_content"] == extra
    (item,) = events[-1]["response"]["output"]
    assert item["extra_content"] == extra
    replayed = to_chat_request({"model": "m", "input": [item]}).chat["messages"][0]
    assert replayed["tool_calls"][0]["extra_content"] == extra
