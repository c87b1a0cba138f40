"""The spec validator itself: it must accept valid shapes and reject invalid ones."""

from __future__ import annotations

from tests.openapi_schema import schema_errors

_CHUNK = {
    "id": "c1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
}


def test_nullable_finish_reason_is_accepted() -> None:
    assert schema_errors("CreateChatCompletionStreamResponse", _CHUNK) == []


def test_negative_control_rejects_wrong_object_and_types() -> None:
    bad = {**_CHUNK, "object": "chat.completion", "created": "yesterday"}
    errors = schema_errors("CreateChatCompletionStreamResponse", bad)
    assert any("created" in e for e in errors)
    assert any("object" in e for e in errors)


def test_model_list_requires_owned_by() -> None:
    ok = {"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "x"}]}
    assert schema_errors("ListModelsResponse", ok) == []
    bad = {"object": "list", "data": [{"id": "m", "object": "model", "created": 0}]}
    assert schema_errors("ListModelsResponse", bad)
