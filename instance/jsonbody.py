"""Parsing a request's JSON body as hostile input: strict UTF-8, bounded depth, only
strings that are Unicode text without NUL.

``request.get_json`` hands invalid UTF-8 and a recursion overflow (JSON nested ~1000
deep) to the app as exceptions that end as 500s, and lets lone surrogates ("\\ud800")
through, which then fail much later: on the UTF-8 encode of a page, a database driver or
a live frame. NUL is refused by PostgreSQL in every text column (and by no field type
here on purpose). Refused at the edge, the rest of the code only ever sees text.
"""

from __future__ import annotations

import json
import re
from typing import Any

from instance.errors import ApiError

# Deeper than any body the API takes (a field's export settings are the deepest, 3).
MAX_DEPTH = 32
_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")


def is_text(text: str) -> bool:
    """Whether ``text`` is free of NUL and of lone surrogates (no UTF-8 encoder takes one)."""
    return _NOT_TEXT.search(text) is None


def _bad_json(detail: str) -> ApiError:
    return ApiError(400, "bad_json", detail)


def parse(raw: bytes) -> Any:
    """The JSON document in ``raw``, or ApiError (400 for syntax, 422 for content)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_json(f"the body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise _bad_json(f"the body is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        # Also Python's limit on the digits of an integer (4300).
        raise _bad_json(f"the body is not valid JSON: {exc}") from None
    check(data)
    return data


def check(data: Any) -> None:
    """Depth and text checks over a parsed document, without recursion."""
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > MAX_DEPTH:
                raise _bad_json(f"the body is nested deeper than {MAX_DEPTH} levels")
            pairs = node.items() if isinstance(node, dict) else enumerate(node)
            for key, value in pairs:
                if isinstance(key, str) and not is_text(key):
                    raise _not_text(where or "the body", "a member name")
                stack.append((value, f"{where}.{key}" if where else str(key), depth + 1))
        elif isinstance(node, str) and not is_text(node):
            raise _not_text(where or "the body", "the string")


def _not_text(where: str, what: str) -> ApiError:
    return ApiError(422, "invalid", f"{what} at {where} holds NUL or a lone surrogate "
                    "(such as \\ud800): strings must be Unicode text without NUL",
                    member=where)
