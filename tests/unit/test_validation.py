"""app/validation.py: every bad field named, in our words, without reading any error message."""

from __future__ import annotations

from typing import Annotated

import msgspec
import msgspec.inspect as mi
import pytest

from app.tasks.schemas import TaskCompletion, TaskCreate, TaskUpdate
from app.validation import FieldError, InvalidRequestError, body_errors, decode_body, expected

MSGSPEC_WORDING = ("Expected `", "`$", " - at ", "Object missing")


def errors_of(raw: bytes, body_type: object = TaskCreate) -> list[FieldError]:
    with pytest.raises(InvalidRequestError) as caught:
        decode_body(raw, body_type)
    for error in caught.value.errors:
        assert not any(words in error.message for words in MSGSPEC_WORDING), error
    return caught.value.errors


def test_a_valid_body_decodes_in_one_step() -> None:
    task = decode_body(b'{"title": " Buy milk ", "completed": true, "tags": ["a"]}', TaskCreate)
    assert (task.title, task.completed, task.tags) == ("Buy milk", True, ["a"])
    assert decode_body(b"null", TaskCompletion | None) is None


def test_every_bad_field_is_listed_with_what_it_must_be() -> None:
    raw = b'{"title": 42, "priority": "urgent", "completed": "maybe", "tags": ["a", "", 5], "due_date": 1}'
    assert [(e.field, e.message) for e in errors_of(raw)] == [
        ("title", "must be a string of at least 1 character"),
        ("completed", "must be true or false"),
        ("priority", 'must be one of "high", "low", "medium"'),
        ("due_date", "must be a string of at most 64 characters or null"),
        ("tags[1]", "must be a string of 1 to 40 characters"),
        ("tags[2]", "must be a string of 1 to 40 characters"),
    ]
    assert all(error.source == "body" for error in errors_of(raw))


def test_a_missing_required_field_is_named() -> None:
    assert errors_of(b"{}") == [FieldError("title", "is required", "body")]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "must be a JSON document in UTF-8 (the body is not valid JSON)"),
        (b'{"title": "\xc3("}', "must be a JSON document in UTF-8 (the body is not valid JSON)"),
        (b"[1]", "must be a JSON object, not a list"),
        (b"3", "must be a JSON object, not a number"),
        (b"null", "must be a JSON object, not null"),
        (b"[" * 10_000 + b"]" * 10_000, "is nested too deeply"),
    ],
)
def test_a_body_that_is_not_an_object_is_one_error(raw: bytes, message: str) -> None:
    assert errors_of(raw) == [FieldError("body", message, "body")]


def test_the_structs_own_checks_keep_their_field() -> None:
    assert errors_of(b'{"title": " \\u200b "}') == [FieldError("title", "must not be blank", "body")]
    assert errors_of(b'{"title": "t", "tags": ["A", "a"]}')[0].field == "tags"
    assert errors_of(b"{}", TaskUpdate)[0].field == "body"


def test_wording_of_each_kind_of_type() -> None:
    assert expected(mi.type_info(Annotated[int, msgspec.Meta(ge=1, le=9)])) == "an integer from 1 to 9"
    assert expected(mi.type_info(list[Annotated[str, msgspec.Meta(max_length=3)]])) == (
        "a list of strings of at most 3 characters"
    )
    assert expected(mi.type_info(bool | None)) == "true or false or null"


def test_body_errors_needs_no_exception_to_read() -> None:
    errors = body_errors(b'{"title": []}', TaskCreate)
    assert errors == [FieldError("title", "must be a string of at least 1 character", "body")]
