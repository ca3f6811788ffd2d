"""The request class: JSON bodies that msgspec cannot decode are the client's error, never a 500, and a client
that hangs up in the middle of its body is not a server error either."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import ClientException, InternalServerException

_DISCONNECTED = "client disconnected prematurely"  # what Litestar raises, as a 500, when the body is cut off


class ClientDisconnectedError(Exception):
    """The client went away before its request body was complete: nothing to answer, nothing to alarm."""


class ApiRequest(Request[Any, Any, Any]):
    """Litestar's request, with two decoding failures it lets escape turned into 400s, and a client's hang-up
    told apart from a server error."""

    async def body(self) -> bytes:
        """The whole body; :class:`ClientDisconnectedError` when the client hung up before sending it all."""
        try:
            return await super().body()
        except InternalServerException as exc:
            if exc.detail == _DISCONNECTED:
                raise ClientDisconnectedError from None
            raise

    async def json(self) -> Any:
        """The decoded JSON body; invalid UTF-8 and absurdly deep nesting are malformed JSON."""
        try:
            return await super().json()
        except UnicodeDecodeError:
            raise ClientException("JSON is malformed: the body is not valid UTF-8") from None
        except RecursionError:
            raise ClientException("JSON is malformed: nested too deeply") from None
