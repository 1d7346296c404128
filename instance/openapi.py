"""``/openapi.json``, the OpenAPI 3.1 description of the JSON API, and what keeps it true.

The decorators below both describe a handler and enforce the description at run time:

- ``@accepts(Model)``: the body goes through ``web.json_body`` (the strict parser: 415,
  400 for bad JSON, 422 for NUL or lone surrogates, depth) and is then validated into
  ``Model``, which the handler gets as ``data``; a body that does not match is a 422
  saying which member is wrong and why.
- ``@with_query(Model)``: query parameters, read with ``web.int_arg`` (400 ``bad_query``) into
  ``Model``, which the handler gets as ``query``.
- ``@responds(status, Model)``: what the handler returns with that status is checked
  against ``Model``; a status or body nobody described is a server error (500, logged),
  which every test that reaches the handler would catch. ``Model`` None: no body.

quart-schema builds the document from the same models (its ``document_*`` decorators
record them on the handler, its ``OpenAPIProvider`` walks the URL map). Only its
provider is used, not its app extension: that one re-serializes every response through
pydantic, replaces the app's JSON provider and adds documentation pages that load
scripts from CDNs.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from functools import wraps
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from annotated_types import Ge, Le
from pydantic import BaseModel, TypeAdapter, ValidationError
from quart import Quart, Response, current_app, has_app_context, request
from quart_schema import (
    APIKeySecurityScheme,
    HttpSecurityScheme,
    Info,
    QuartSchema,
    Server,
    document_headers,
    document_querystring,
    document_request,
    document_response,
)
from quart_schema.conversion import model_schema
from quart_schema.openapi import OpenAPIProvider
from quart_schema.validation import QUART_SCHEMA_RESPONSE_ATTRIBUTE
from werkzeug.routing import IntegerConverter
from werkzeug.routing.converters import BaseConverter
from werkzeug.routing.rules import Rule

from instance.api.schemas import Error
from instance.config import Settings
from instance.errors import ApiError
from instance.security import SESSION_COOKIE
from instance.web import MAX_INT, int_arg, json_body

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
OPENAPI_PATH = "/openapi.json"
_CHECKED = "_fieldcast_responses_checked"
_SAMPLED = "_fieldcast_responses_sampled"


log = logging.getLogger(__name__)

#: app.config key: drift raises (``test_strict_answers``) instead of being logged.
STRICT = "FIELDCAST_STRICT_ANSWERS"


class ResponseDrift(RuntimeError):
    """A handler answered something its description does not allow: a bug here."""


# ---- request bodies -----------------------------------------------------------------------


def accepts(model: Any) -> Callable[[F], F]:
    """The handler takes a JSON body of ``model``, passed to it as ``data``."""
    # The pydantic-core validator itself: TypeAdapter.validate_python adds ~1 us a call.
    validator = TypeAdapter(model).validator
    # The model's first sentence, to say what the body should be.
    summary = " ".join(inspect.cleandoc(model.__doc__ or "").split()).split(". ")[0]

    def decorator(func: F) -> F:
        document_request(model)(func)

        @wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            raw = await json_body()
            try:
                data = validator.validate_python(raw)
            except ValidationError as exc:
                raise body_error(exc, summary) from None
            return await func(*args, data=data, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


_PHRASES = {
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "int_type": "must be a whole number",
    "dict_type": "must be an object",
    "list_type": "must be a list",
    "missing": "is missing",
}


# A body of 10,000 unknown members answers a sentence, not 10,000.
_SHOWN = 5


def body_error(exc: ValidationError, summary: str = "") -> ApiError:
    """A 422 naming each member at fault, in words, with ``member`` the first of them,
    and what the body should be (``summary``: the model's first sentence)."""
    sentences, first = [], None
    unknown = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(part) for part in err["loc"])
        first = first if first is not None else where
        kind = err["type"]
        if kind == "extra_forbidden":
            unknown.append(where)
            continue
        ctx = err.get("ctx") or {}
        if kind in _PHRASES:
            phrase = _PHRASES[kind]
        elif kind == "literal_error":
            phrase = f"must be {ctx.get('expected')}"
        elif kind in ("less_than_equal", "greater_than_equal"):
            phrase = (f"must be at most {ctx.get('le')}" if kind == "less_than_equal"
                      else f"must be at least {ctx.get('ge')}")
        else:
            phrase = f"is wrong: {err['msg'].lower()}"
        subject = f"the member {where}" if where else "the body"
        sentences.append(f"{subject} {phrase}")
    if unknown:
        more = f" and {len(unknown) - _SHOWN} more" if len(unknown) > _SHOWN else ""
        sentences.append(f"unknown member(s) {', '.join(unknown[:_SHOWN])}{more}")
    if len(sentences) > _SHOWN:
        sentences[_SHOWN:] = [f"{len(sentences) - _SHOWN} more problems"]
    detail = "; ".join(sentences) or "the body does not match what this request takes"
    if summary:
        detail += f". The body is {summary[0].lower()}{summary[1:].rstrip('.')}"
    extra: dict[str, Any] = {"member": first} if first else {}
    return ApiError(422, "invalid", f"{detail} (see /openapi.json).", **extra)


# ---- query parameters ---------------------------------------------------------------------


def _bounds(info: Any) -> tuple[int, int]:
    low, high = 0, MAX_INT
    for meta in info.metadata:
        if isinstance(meta, Ge):
            low = int(meta.ge)  # type: ignore[call-overload]
        elif isinstance(meta, Le):
            high = int(meta.le)  # type: ignore[call-overload]
    return low, high


def with_query(model: type[BaseModel]) -> Callable[[F], F]:
    """The handler takes the query parameters of ``model``, passed to it as ``query``.

    Whole numbers go through ``int_arg`` (digits only, within the field's bounds: a 400
    ``bad_query`` naming the parameter otherwise); unknown parameters are ignored.
    """
    fields = model.model_fields

    def decorator(func: F) -> F:
        document_querystring(model)(func)

        @wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            values: dict[str, Any] = {}
            for name, info in fields.items():
                if name not in request.args:
                    continue
                if info.annotation is int:
                    low, high = _bounds(info)
                    values[name] = int_arg(name, info.default, minimum=low, maximum=high)
                else:
                    values[name] = request.args[name]
            try:
                parsed = model.model_validate(values)
            except ValidationError as exc:
                bad = exc.errors(include_url=False)[0]
                raise ApiError(400, "bad_query", f"query parameter {bad['loc'][0]}: "
                               f"{bad['msg'].lower()}") from None
            return await func(*args, query=parsed, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def with_headers(model: type[BaseModel]) -> Callable[[F], F]:
    """Describes request headers the handler reads itself (If-Match, If-None-Match)."""
    return document_headers(model)


# ---- answers ------------------------------------------------------------------------------


def responds(status: int, model: Any = None, *, sample: str | None = None
             ) -> Callable[[F], F]:
    """The handler answers ``status`` with a body of ``model`` (None: no body).

    Stacked ``@responds`` share one check, which knows every status described: an answer
    with another status is drift too. Errors raised as ApiError are not answers of the
    handler; the description's ``default`` response covers them.

    ``sample`` names the list member of a page (items, changes): only its first row is
    checked at run time, as checking 500 items costs about what encoding them does. The
    rows are made by one function each; the schemathesis run checks whole pages.
    """
    def decorator(func: F) -> F:
        document_response(model, status)(func)
        # Tables shared by every @responds of the handler (functools.wraps copies the
        # references outward): the one check reads them at call time.
        sampled: dict[int, str] | None = getattr(func, _SAMPLED, None)
        if sampled is None:
            sampled = {}
            setattr(func, _SAMPLED, sampled)
        if sample is not None:
            sampled[status] = sample
        if getattr(func, _CHECKED, False):
            return func  # an inner @responds checks, reading the same (shared) table
        described: dict[int, tuple[Any, Any]] = getattr(func, QUART_SCHEMA_RESPONSE_ATTRIBUTE)
        adapters: dict[int, TypeAdapter[Any] | None] = {}

        def adapter(code: int) -> TypeAdapter[Any] | None:
            if code not in adapters:
                body_model = described[code][0]
                adapters[code] = None if body_model is None else TypeAdapter(body_model)
            return adapters[code]

        @wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = await func(*args, **kwargs)
            try:
                await _check(func.__name__, result, described, adapter, sampled)
            except ResponseDrift:
                # The work is done (a save may be committed): in production the caller
                # gets its answer and the operator the report. Outside an app (unit
                # tests) and in strict test runs the drift is an error.
                if not has_app_context() or current_app.config.get(STRICT, True):
                    raise
                log.exception("an answer drifted from the API's description")
            return result

        setattr(wrapper, _CHECKED, True)
        return wrapper  # type: ignore[return-value]

    return decorator


async def _check(name: str, result: Any, described: dict[int, Any],
                 adapter: Callable[[int], TypeAdapter[Any] | None],
                 sampled: dict[int, str]) -> None:
    value, code = result, 200
    if isinstance(result, tuple):
        value = result[0]
        if len(result) > 1 and isinstance(result[1], int):
            code = result[1]
    if isinstance(value, Response):
        code = value.status_code
    if code not in described:
        raise ResponseDrift(f"{name} answered {code}, which its description does not list "
                            f"({', '.join(map(str, sorted(described)))})")
    check = adapter(code)
    if isinstance(value, Response):
        value = await value.get_json(force=True, silent=True) if check else (
            await value.get_data(as_text=True))
    if check is None:
        if value not in ("", None):
            raise ResponseDrift(f"{name} answered {code} with a body; none is described")
        return
    if code in sampled and isinstance(value, dict) and isinstance(value.get(sampled[code]),
                                                                  list):
        value = {**value, sampled[code]: value[sampled[code]][:1]}
    try:
        check.validator.validate_python(value)
    except ValidationError as exc:
        raise ResponseDrift(f"{name} answered {code} with a body that does not match its "
                            f"description: {exc}") from None


# ---- the document -------------------------------------------------------------------------


class Provider(OpenAPIProvider):
    """quart-schema's provider, for ``/api/`` routes only, with the error shape as every
    operation's ``default`` answer and bounded path integers."""

    def generate_rules(self) -> Any:
        for rule in super().generate_rules():
            if rule.rule.startswith("/api/"):
                yield rule

    def build_path_parameter(self, name: str, converter: BaseConverter) -> dict[str, Any]:
        parameter = super().build_path_parameter(name, converter)
        if isinstance(converter, IntegerConverter):
            # routing.BoundedInt: past the database's ids, no route matches (404).
            parameter["schema"] = {"type": "integer", "minimum": 0,
                                   "maximum": getattr(converter, "max", None) or MAX_INT}
        return parameter

    def build_response_object(self, model: Any, headers_model: Any) -> tuple[dict, dict]:
        if model is None:
            return {"description": "no body"}, {}
        return super().build_response_object(model, headers_model)

    def build_paths(self, rule: Rule) -> tuple[dict, dict]:
        paths, components = super().build_paths(rule)
        tag = rule.endpoint.rsplit(".", 1)[0]
        for operations in paths.values():
            for operation in operations.values():
                for parameter in operation["parameters"]:
                    parameter["schema"].pop("title", None)
                    if parameter["in"] == "header":
                        parameter["schema"].pop("default", None)  # absent: no precondition
                operation["responses"] = {
                    **operation["responses"],
                    "default": {"description": "an error (the status says which)",
                                "content": {"application/json": {
                                    "schema": {"$ref": "#/components/schemas/Error"}}}}}
                operation["tags"] = [tag]
        components["Error"] = model_schema(Error)
        return paths, components


def _version() -> str:
    try:
        return version("fieldcast")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "0"


def init_app(app: Quart, settings: Settings) -> None:
    """Serve the description at ``/openapi.json``, built once, on first request."""
    app.config[STRICT] = settings.test_strict_answers
    app.config.setdefault("QUART_SCHEMA_CONVERSION_PREFERENCE", "pydantic")
    app.config.setdefault("QUART_SCHEMA_CONVERT_CASING", False)
    extension = QuartSchema(
        info=Info(title="fieldcast", version=_version(),
                  description=(
                      "The JSON API of a fieldcast instance. Authenticate with an API "
                      "token (`Authorization: Bearer fc_…`, from POST /api/tokens) or the "
                      "session cookie of POST /api/login; anonymous callers see what "
                      "the group Anonymous may read. Every error answers "
                      "`{\"error\": code, \"detail\": sentence}`.")),
        servers=[Server(url=settings.base_url, description=settings.instance_name)],
        security_schemes={
            "token": HttpSecurityScheme(scheme="bearer", bearer_format="fc_…"),
            "session": APIKeySecurityScheme(name=SESSION_COOKIE, in_="cookie"),
        },
        security=[{}, {"token": []}, {"session": []}],
        openapi_path=None,
    )
    provider = Provider(app, extension)
    built: list[bytes] = []

    async def openapi() -> Response:
        if not built:
            built.append(json.dumps(provider.schema(), ensure_ascii=False).encode())
        return Response(built[0], mimetype="application/json")

    app.add_url_rule(OPENAPI_PATH, "openapi", openapi)
