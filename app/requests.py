"""The request class: JSON bodies that msgspec cannot decode are the client's error, never a 500."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import ClientException


class ApiRequest(Request[Any, Any, Any]):
    """Litestar's request, with two decoding failures it lets escape turned into 400s."""

    async def json(self) -> Any:
        """The decoded JSON body; invalid UTF-8 and absurdly deep nesting are malformed JSON."""
        try:
            return await super().json()
        except UnicodeDecodeError:
            raise ClientException("JSON is malformed: the body is not valid UTF-8") from None
        except RecursionError:
            raise ClientException("JSON is malformed: nested too deeply") from None
