"""The task routes' own OpenAPI pieces: operations Litestar cannot describe from the handler alone, and the
``If-Match``/``ETag`` headers the write routes share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from litestar.datastructures import ResponseHeader
from litestar.openapi.spec import Link, OpenAPIResponse, Reference, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import HeaderParameter

from app.openapi import ApiOperation
from app.tasks.etags import MAX_ENTITY_TAGS
from app.tasks.schemas import TaskUpdate


@dataclass
class OptionalBodyOperation(ApiOperation):
    """Litestar marks every request body required; ``/complete`` works without one (it toggles)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.request_body is not None and not isinstance(self.request_body, Reference):
            self.request_body.required = False


# What app.tasks.etags.if_match_versions accepts: "*", or a comma-separated list (empty elements allowed) of
# entity tags (etagc: %x21 / %x23-7E / obs-text), at least one and at most MAX_ENTITY_TAGS of them.
_ENTITY_TAG_ELEMENT = '[ \\t]*(?:(?:W/)?"[!#-~\\u0080-\\u00ff]*")?[ \\t]*'
IF_MATCH_PATTERN = (
    f'^[ \\t]*(?:\\*|(?!(?:[^"]*"){{{2 * MAX_ENTITY_TAGS + 1}}})(?=[^"]*")'
    f"{_ENTITY_TAG_ELEMENT}(?:,{_ENTITY_TAG_ELEMENT})*)[ \\t]*$"
)
IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        description=(
            'Make the change only if the task\'s current `ETag` is one of these strong tags (`"12-3"` or '
            '`"12-3", "12-4"`), or the task exists (`*`); otherwise 412 and nothing changes. Without it the '
            "change is unconditional."
        ),
        required=False,
        # A header is a string when sent; absent when not (the ``None`` of the annotation is not a value to send).
        schema_extra={"type": OpenAPIType.STRING, "one_of": None, "pattern": IF_MATCH_PATTERN},
    ),
]
ETAG_HEADER = ResponseHeader(
    name="ETag",
    description='The task\'s strong entity tag, `"<id>-<version>"`; it changes with every write to the task.',
    required=True,
    documentation_only=True,
)

# Where a created task's id can be used next: OpenAPI links from the create route's 201 response.
_TASK_LINKS = {
    "GetTask": ("getTask", "Read the task just created."),
    "ReplaceTask": ("replaceTask", "Update the task just created (PUT)."),
    "UpdateTask": ("updateTask", "Update part of the task just created (PATCH)."),
    "CompleteTask": ("completeTask", "Complete, reopen or toggle the task just created."),
    "DeleteTask": ("deleteTask", "Delete the task just created."),
}


@dataclass
class CreateTaskOperation(ApiOperation):
    """The create route's operation: its 201 response links the new task's ``id`` to the routes that take it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        created = (self.responses or {}).get("201")
        if isinstance(created, OpenAPIResponse):
            created.links = {
                name: Link(
                    operation_id=target,
                    parameters={"user_id": "$request.path.user_id", "task_id": "$response.body#/id"},
                    description=description,
                )
                for name, (target, description) in _TASK_LINKS.items()
            }


@dataclass
class UpdateTaskOperation(ApiOperation):
    """PUT and PATCH: a body must carry at least one of the task's fields (unknown fields are ignored, so
    ``minProperties`` would not say it). Stated as ``anyOf: [{allOf: [TaskUpdate, {required: [title]}]}, …]``, one
    branch per field: validators see the rule, and openapi-typescript makes it a union of ``TaskUpdate`` with one
    field required (``WithRequired<TaskUpdate, "title"> | …``), so ``{}``, ``42`` and misspelt fields do not compile.
    (An ``anyOf`` of bare ``required`` lists comes out as ``unknown``, which lets anything through.)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.request_body, RequestBody):
            for media in self.request_body.content.values():
                if media.schema is not None:
                    body = media.schema
                    media.schema = Schema(
                        any_of=[Schema(all_of=[body], required=[name]) for name in TaskUpdate.__struct_fields__]
                    )
