"""Field types: what options each takes and which values each accepts.

Values are stored as JSON. ``null`` clears a field of any type.
"""

from __future__ import annotations

import math
import re
from datetime import date
from typing import Any

TEXT_MAX = 1000
TEXTAREA_MAX = 200_000
CHOICE_MAX = 200
CHOICES_MAX = 500

FIELD_TYPES = ("text", "textarea", "number", "dropdown", "date", "user", "remote")

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# Whole numbers are kept to what every reader holds exactly enough to compare and show:
# a signed 64-bit integer. Past it, float() overflows (a 400-digit value was a 500).
INT_LIMIT = 2**63 - 1
_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")


class FieldTypeError(ValueError):
    """A value or an option does not fit the field's type; the message says how."""


def _check_text(value: Any, what: str) -> None:
    """Every string in ``value`` (nested too) is Unicode text without NUL.

    A lone surrogate ("\\ud800") is no Unicode scalar value: no UTF-8 encoder accepts it,
    so once stored it broke every page and live frame that carried it. NUL is refused by
    PostgreSQL in text and by no type here on purpose: no field type takes it.
    """
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if (bad := _NOT_TEXT.search(node)) is not None:
                char = ("NUL" if bad.group() == "\x00"
                        else f"a lone surrogate (\\u{ord(bad.group()):04x})")
                raise FieldTypeError(f"{what} holds {char}: only Unicode text without NUL "
                                     "is accepted")
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise FieldTypeError(
            f"{kind} name must start with a lowercase letter and hold only lowercase letters, "
            f"digits and _ (at most 64), got {name!r}"
        )
    return name


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -INT_LIMIT <= value <= INT_LIMIT
    return isinstance(value, float) and math.isfinite(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}… ({len(text)} characters)"


def validate_options(field_type: str, options: Any) -> dict[str, Any]:
    """Normalized options for a field of this type, or FieldTypeError."""
    if field_type not in FIELD_TYPES:
        raise FieldTypeError(
            f"unknown field type {field_type!r}; choose one of {', '.join(FIELD_TYPES)}"
        )
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise FieldTypeError("options must be a JSON object")
    _check_text(options, "an option")
    allowed: dict[str, set[str]] = {
        "text": set(),
        "textarea": set(),
        "number": {"min", "max", "integer"},
        "dropdown": {"choices"},
        "date": set(),
        "user": set(),
        "remote": {"source"},
    }
    unknown = set(options) - allowed[field_type]
    if unknown:
        raise FieldTypeError(
            f"a {field_type} field takes no option(s) {', '.join(sorted(unknown))}"
            + (f"; it takes {', '.join(sorted(allowed[field_type]))}" if allowed[field_type]
               else "")
        )
    out = dict(options)
    if field_type == "number":
        for bound in ("min", "max"):
            if bound in out and not _is_number(out[bound]):
                raise FieldTypeError(f"option {bound} must be a finite number between "
                                     f"-{INT_LIMIT} and {INT_LIMIT}")
        if "min" in out and "max" in out and out["min"] > out["max"]:
            raise FieldTypeError("option min must not be greater than max")
        if "integer" in out and not isinstance(out["integer"], bool):
            raise FieldTypeError("option integer must be true or false")
    elif field_type == "dropdown":
        choices = out.get("choices")
        if not isinstance(choices, list) or not choices:
            raise FieldTypeError("a dropdown field needs options.choices, a non-empty list")
        if len(choices) > CHOICES_MAX:
            raise FieldTypeError(f"a dropdown may have at most {CHOICES_MAX} choices")
        for choice in choices:
            if not isinstance(choice, str) or not choice.strip() or len(choice) > CHOICE_MAX:
                raise FieldTypeError(
                    f"each choice must be a non-empty string of at most {CHOICE_MAX} characters"
                )
        if len(set(choices)) != len(choices):
            raise FieldTypeError("dropdown choices must be distinct")
    elif field_type == "remote":
        source = out.get("source")
        required = ("instance", "tracker", "field")
        if not isinstance(source, dict) or not all(
            isinstance(source.get(k), str) and source.get(k) for k in required
        ):
            raise FieldTypeError(
                "a remote field needs options.source with string members instance (the host "
                "instance's base URL), tracker and field"
            )
        if not source["instance"].startswith(("http://", "https://")):
            raise FieldTypeError("options.source.instance must be an http(s) URL")
    return out


def validate_value(field_type: str, options: dict[str, Any], value: Any) -> Any:
    """The value to store, or FieldTypeError saying what is wrong with it.

    ``user`` values are usernames; whether the user exists is checked by the caller,
    which has the database.
    """
    if value is None:
        return None
    _check_text(value, "the value")
    if field_type == "text":
        if not isinstance(value, str):
            raise FieldTypeError("must be a string")
        if "\n" in value or "\r" in value:
            raise FieldTypeError("is a single-line text field; use a textarea for line breaks")
        if len(value) > TEXT_MAX:
            raise FieldTypeError(f"may have at most {TEXT_MAX} characters, got {len(value)}")
        return value
    if field_type == "textarea":
        if not isinstance(value, str):
            raise FieldTypeError("must be a string")
        if len(value) > TEXTAREA_MAX:
            raise FieldTypeError(f"may have at most {TEXTAREA_MAX} characters, got {len(value)}")
        return value
    if field_type == "number":
        if not _is_number(value):
            raise FieldTypeError(f"must be a finite number between -{INT_LIMIT} and "
                                 f"{INT_LIMIT}, got {_short(value)}")
        if options.get("integer") and not float(value).is_integer():
            raise FieldTypeError(f"must be a whole number, got {value!r}")
        if "min" in options and value < options["min"]:
            raise FieldTypeError(f"must be at least {options['min']}, got {value!r}")
        if "max" in options and value > options["max"]:
            raise FieldTypeError(f"must be at most {options['max']}, got {value!r}")
        if options.get("integer"):
            return int(value)
        return value
    if field_type == "dropdown":
        choices = options.get("choices", [])
        if value not in choices or not isinstance(value, str):
            raise FieldTypeError(f"must be one of {', '.join(map(repr, choices))}; got {value!r}")
        return value
    if field_type == "date":
        if not isinstance(value, str) or not _DATE_RE.match(value):
            raise FieldTypeError(f"must be a date written YYYY-MM-DD, got {value!r}")
        try:
            date.fromisoformat(value)
        except ValueError:
            raise FieldTypeError(f"{value!r} is not a calendar date") from None
        return value
    if field_type == "user":
        if not isinstance(value, str) or not value:
            raise FieldTypeError("must be a username")
        return value
    if field_type == "remote":
        # Mirrored values arrive from the host instance already validated there.
        return value
    raise FieldTypeError(f"unknown field type {field_type!r}")
