"""URL converters and checks that keep hostile path values away from the handlers.

A path integer past what the database holds (2**63 - 1) made SQL fail with a 500; here it
simply matches no route, so it answers 404 like any id that does not exist. A path
segment that is not text (a lone surrogate, which no UTF-8 encoder accepts, or NUL, which
PostgreSQL refuses in text) names nothing either: 404 as well.
"""

from __future__ import annotations

from typing import Any

from quart import request
from werkzeug.routing import IntegerConverter, ValidationError

from instance.errors import ApiError
from instance.jsonbody import is_text
from instance.web import MAX_INT


class BoundedInt(IntegerConverter):
    """``<int:…>`` limited to the database's 64-bit ids."""

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_INT)
        super().__init__(map, *args, **kwargs)

    def to_python(self, value: str) -> int:
        # ``max`` is checked after int(): a 5000-digit path would cost that conversion.
        if len(value) > 19:
            raise ValidationError()
        return super().to_python(value)


# The longest file name most file systems take: a longer static path is an OSError.
_NAME_MAX = 255


async def check_request_text() -> None:
    """``before_request``: path values and query parameters must be text."""
    view_args = request.view_args or {}
    for value in view_args.values():
        if isinstance(value, str) and not is_text(value):
            raise ApiError(404, "not_found", "nothing exists at this address")
    if request.endpoint == "pages.static" and any(
            len(part.encode()) > _NAME_MAX for part in str(view_args.get("filename")).split("/")):
        raise ApiError(404, "not_found", "nothing exists at this address")
    for name, value in request.args.items(multi=True):
        if not (is_text(name) and is_text(value)):
            raise ApiError(400, "bad_query", f"query parameter {name!r} holds a character "
                           "that is not text (NUL or a lone surrogate)")
