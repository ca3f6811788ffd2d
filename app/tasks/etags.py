"""Entity tags for tasks, and the ``If-Match`` header (RFC 9110 §8.8.3, §13.1.1).

A task's ETag is the strong tag ``"<id>-<version>"``: ``version`` counts the writes to the task (1 when
created, +1 in the same ``UPDATE`` as every change), so two representations of a task share a tag exactly
when nothing was written in between. It is not a hash of the body, and timestamps play no part.

``If-Match`` is ``*`` or a comma-separated list of entity tags. A condition holds when the task's current
tag is in the list (strong comparison: a weak ``W/"…"`` tag never matches) or, for ``*``, when the task
exists. The check itself happens in the database, in the ``WHERE`` clause of the write.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_VERSION = 2**31 - 1  # the column is a 32-bit integer; a larger number can never match
MAX_ENTITY_TAGS = 100
# One list element: optional white space, an optional entity tag, optional white space, then a comma or the end.
# etagc is %x21 / %x23-7E / obs-text, so a tag may contain commas but never a double quote.
_ELEMENT = re.compile(r'[ \t]*(?:(W/)?"([\x21\x23-\x7e\x80-\xff]*)")?[ \t]*(,|\Z)')
_OUR_TAG = re.compile(r"([1-9][0-9]{0,18})-([1-9][0-9]{0,9})")


def etag(task: Mapping[str, Any]) -> str:
    """The strong ETag of a task as it is now (a mapping of its columns): ``"<id>-<version>"``."""
    return f'"{task["id"]}-{task["version"]}"'


def if_match_versions(header: str | None, task_id: int) -> frozenset[int] | None:
    """The versions of task ``task_id`` that an ``If-Match`` header accepts.

    ``None`` means no condition: the header is absent or ``*`` (any existing task). Otherwise the set of
    versions named by strong tags of this task; it may be empty (tags of other tasks, weak tags, tags not
    made by this service), in which case no current version matches. Raises ``ValueError`` for a header
    that is not a list of entity tags.
    """
    if header is None:
        return None
    text = header.strip(" \t")
    if text == "*":
        return None
    versions: set[int] = set()
    count, position = 0, 0
    while True:
        element = _ELEMENT.match(text, position)
        if element is None:
            raise ValueError('must be "*" or a comma-separated list of entity tags such as "12-3"')
        weak, opaque, separator = element.groups()
        if opaque is not None:
            count += 1
            if count > MAX_ENTITY_TAGS:
                raise ValueError(f"must name at most {MAX_ENTITY_TAGS} entity tags")
            tag = _OUR_TAG.fullmatch(opaque)
            if weak is None and tag is not None and int(tag.group(1)) == task_id:
                version = int(tag.group(2))
                if version <= MAX_VERSION:
                    versions.add(version)
        if not separator:
            break
        position = element.end()
    if count == 0:
        raise ValueError('must name at least one entity tag, or be "*"')
    return frozenset(versions)
