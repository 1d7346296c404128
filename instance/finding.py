"""Finding items: the query parameters of a tracker's item list, and the SQL behind them.

One parser (``parse_query``) reads the parameters that ``GET /api/trackers/SLUG/items``
and the tracker page share: ``sort``, ``q``, field filters, ``limit`` and a ``cursor``
(README.md, "Finding items"). ``find_items`` answers one page with keyset paging.

Rights: only fields the caller may read can be named. A hidden field answers exactly as
a field that does not exist (the same 400, word for word), and the search runs only over
readable fields, so no answer depends on a value the caller may not read.

Sort keys are SQL expressions over ``field_values.value`` (JSON), one for numbers and
one for everything else (lowercased text, cut to 200 characters so it fits a B-tree
entry). Migration 0007 indexes exactly these expressions, as partial indexes over the
values of their JSON type; the queries below repeat the same expressions and the same
type predicate, which is what lets SQLite and PostgreSQL use them (bench/search.py
shows the plans).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Float, String, exists, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from instance.errors import ApiError
from instance.fieldtypes import FieldTypeError, validate_value
from instance.models import Base, Item
from instance.rights import FieldDef, Principal

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
Q_MAX = 200
KEY_LENGTH = 200  # characters of a text value that take part in sorting
RESERVED = ("limit", "cursor", "after", "sort", "q")
#: Field types matched by ``q``.
SEARCHED = ("text", "textarea")
#: Field types filtered by value (``FIELD=v``, repeatable: any of them).
BY_VALUE = ("dropdown", "user")
#: Field types filtered by a range (``FIELD.from=``, ``FIELD.to=``, both inclusive).
BY_RANGE = ("date", "number")

_values = Base.metadata.tables["field_values"]
_items = Base.metadata.tables["items"]


# ---- the key expressions (migration 0007 indexes the same text) ---------------------------


class text_key(FunctionElement[str]):
    """A text value as it sorts: lowercased, its first 200 characters."""

    type = String()
    inherit_cache = True
    name = "text_key"


class num_key(FunctionElement[float]):
    type = Float()
    inherit_cache = True
    name = "num_key"


class raw_text(FunctionElement[str]):
    """A JSON string value as SQL text."""

    type = String()
    inherit_cache = True
    name = "raw_text"


class is_text(FunctionElement[bool]):
    # No Boolean type: SQLAlchemy would add "= 1" on SQLite, and the condition would no
    # longer be the partial indexes' own, which SQLite then does not use.
    inherit_cache = True
    name = "is_text"


class is_num(FunctionElement[bool]):
    inherit_cache = True
    name = "is_num"


#: dialect -> element -> SQL, with {} for the JSON column. Migration 0007 formatted its
#: index definitions from this table: changing an entry needs a migration that rebuilds
#: the index, or the queries stop using it.
SQL: dict[str, dict[str, str]] = {
    "sqlite": {
        "text_key": f"lower(substr(json_extract({{}}, '$'), 1, {KEY_LENGTH}))",
        "num_key": "json_extract({}, '$')",
        "raw_text": "json_extract({}, '$')",
        "is_text": "json_type({}) = 'text'",
        "is_num": "json_type({}) IN ('integer', 'real')",
    },
    "postgresql": {
        "text_key": f"lower(left({{}} #>> '{{{{}}}}', {KEY_LENGTH}))",
        "num_key": "(({} #>> '{{}}')::float8)",
        "raw_text": "({} #>> '{{}}')",
        "is_text": "json_typeof({}) = 'string'",
        "is_num": "json_typeof({}) = 'number'",
    },
}


def _compiler_for(name: str) -> Any:
    def compile_it(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> str:
        sql = SQL.get(compiler.dialect.name, SQL["postgresql"])[name]
        return sql.format(compiler.process(element.clauses, **kw))
    return compile_it


for _element in (text_key, num_key, raw_text, is_text, is_num):
    compiles(_element)(_compiler_for(_element.name))


# ---- the query -------------------------------------------------------------------------------


def bad(detail: str) -> ApiError:
    return ApiError(400, "bad_query", detail)


@dataclass(frozen=True)
class Filter:
    field: FieldDef
    values: tuple[str, ...] = ()  # dropdown, user: any of these
    low: str | float | None = None  # date, number: inclusive bounds
    high: str | float | None = None


@dataclass(frozen=True)
class Cursor:
    """A position in one sort order: after (``forward``) or before the item ``item``
    whose sort key is ``key`` in segment ``segment`` (0: items with a value, 1: items
    without). Holds only the key of a field the holder may read, and an item id."""

    forward: bool
    sort: str
    segment: int
    key: str | float | None
    item: int

    def encode(self) -> str:
        raw = json.dumps([1 if self.forward else 0, self.sort, self.segment, self.key,
                          self.item], separators=(",", ":"), ensure_ascii=False)
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, sort: str) -> Cursor:
        refused = bad("cursor is not one this server handed out; take next or prev "
                      "from a page's answer")
        if len(token) > 1200:
            raise refused
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise refused from None
        if (not isinstance(data, list) or len(data) != 5 or data[0] not in (0, 1)
                or not isinstance(data[1], str) or data[2] not in (0, 1)
                or not (data[3] is None or isinstance(data[3], str)
                        or (isinstance(data[3], int | float) and not isinstance(data[3], bool)
                            and math.isfinite(data[3])))
                or not isinstance(data[4], int) or isinstance(data[4], bool)
                or not 0 <= data[4] <= 2**63 - 1):
            raise refused
        if data[1] != sort:
            raise bad(f"this cursor belongs to sort={data[1]}, not sort={sort}; "
                      "start again without cursor")
        return cls(bool(data[0]), data[1], data[2], data[3], data[4])


@dataclass(frozen=True)
class ItemQuery:
    """What a list of items asks for, validated against the caller's readable fields."""

    sort_field: FieldDef | None = None  # None: by item id
    descending: bool = False
    filters: tuple[Filter, ...] = ()
    q: str | None = None
    q_fields: tuple[FieldDef, ...] = ()
    limit: int = DEFAULT_LIMIT
    cursor: Cursor | None = None

    @property
    def sort(self) -> str:
        return ("-" if self.descending else "") + (
            self.sort_field.name if self.sort_field else "id")

    def params(self, *, sort: str | None = None) -> list[tuple[str, str]]:
        """The query as parameters, without the cursor (for links of a page)."""
        out: list[tuple[str, str]] = []
        if (sort or self.sort) != "id":
            out.append(("sort", sort or self.sort))
        if self.q:
            out.append(("q", self.q))
        for f in self.filters:
            out.extend((f.field.name, v) for v in f.values)
            if f.low is not None:
                out.append((f"{f.field.name}.from", _show(f.low)))
            if f.high is not None:
                out.append((f"{f.field.name}.to", _show(f.high)))
        if self.limit != DEFAULT_LIMIT:
            out.append(("limit", str(self.limit)))
        return out

    def describe(self) -> dict[str, Any]:
        """The query as the tracker page's script matches new items against it."""
        return {
            "sort": self.sort, "q": self.q, "q_fields": [f.name for f in self.q_fields],
            "filters": [{"field": f.field.name, "type": f.field.type, "values": list(f.values),
                         "from": f.low, "to": f.high} for f in self.filters],
        }


def _show(value: str | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def parse_query(args: Any, slug: str, fields: Sequence[FieldDef], who: Principal) -> ItemQuery:
    """The query in ``args`` (a MultiDict: ``getlist``, iteration over keys), or a 400.

    Every parameter must be known: a misspelt one would otherwise be ignored, and the
    caller would take an unfiltered list for a filtered one.
    """
    readable = {f.name: f for f in fields if f.readable_by(who)}

    def field_named(name: str, param: str) -> FieldDef:
        f = readable.get(name)
        if f is None:
            # The same words for a hidden field as for a missing one.
            raise bad(f"unknown query parameter {param!r}: tracker {slug!r} has no field "
                      f"{name!r}; the parameters are limit, cursor, after, sort, q and, per "
                      "field, FIELD (dropdown, user), FIELD.from and FIELD.to (date, number)")
        return f

    def one(param: str) -> str | None:
        got = args.getlist(param)
        if len(got) > 1:
            raise bad(f"query parameter {param} may be given once, got it {len(got)} times")
        # An empty value is no value: a form sends its empty inputs as param=.
        return got[0] if got and got[0] != "" else None

    limit = _whole(one("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    after = _whole(one("after"), "after", 0, 0, 2**63 - 1)

    sort_field: FieldDef | None = None
    raw_sort = one("sort") or "id"
    descending = raw_sort.startswith("-")
    name = raw_sort[1:] if descending else raw_sort
    if name != "id":
        sort_field = field_named(name, "sort")
    sort = ("-" if descending else "") + name

    q = one("q")
    if q is not None:
        q = q.strip()
        if len(q) > Q_MAX:
            raise bad(f"q may have at most {Q_MAX} characters, got {len(q)}")
    q_fields = tuple(f for f in readable.values() if f.type in SEARCHED)

    by_field: dict[str, dict[str, list[str]]] = {}
    for param in dict.fromkeys(args.keys()):
        if param in RESERVED:
            continue
        base, dot, part = param.partition(".")
        if dot and part not in ("from", "to", "is"):
            field_named(param, param)  # a name with a dot names no field
        field_named(base, param)
        given = [v for v in args.getlist(param) if v != ""]
        if given:
            by_field.setdefault(base, {})[part or "is"] = given
    filters = tuple(_filter(readable[n], parts) for n, parts in by_field.items())

    cursor = None
    token = one("cursor")
    if token is not None and after:
        raise bad("give cursor or after, not both")
    if token is not None:
        cursor = Cursor.decode(token, sort)
        if not _fits(cursor, sort_field):
            raise bad("cursor is not one this server handed out; take next or prev "
                      "from a page's answer")
    elif after:
        if sort != "id":
            raise bad(f"after pages only sort=id; with sort={sort} use the cursor of a page's "
                      "answer (next, prev)")
        cursor = Cursor(True, sort, 0, None, after)
    return ItemQuery(sort_field, descending, filters, q or None, q_fields, limit, cursor)


def _fits(cursor: Cursor, f: FieldDef | None) -> bool:
    """Whether a cursor's key is of the kind its sort compares (a made-up one could
    otherwise compare text with a number, which PostgreSQL refuses)."""
    if f is None or cursor.segment == 1:
        return cursor.key is None and (f is not None or cursor.segment == 0)
    if f.type == "number":
        return isinstance(cursor.key, int | float)
    # PostgreSQL takes no NUL in text, and no stored value holds one. (The app refuses
    # NUL in query parameters; a cursor's base64 hides it from that check.)
    return isinstance(cursor.key, str) and "\x00" not in cursor.key


def _whole(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise bad(f"query parameter {name} must be a whole number, got {raw!r}")
    value = int(raw)
    if not low <= value <= high:
        raise bad(f"query parameter {name} must be between {low} and {high}, got {value}")
    return value


def _filter(f: FieldDef, parts: dict[str, list[str]]) -> Filter:
    name = f.name
    if f.type in BY_VALUE:
        if set(parts) - {"is"}:
            raise bad(f"field {name!r} ({f.type}) is filtered by value: {name}=VALUE, "
                      "repeated for any of several")
        values = parts["is"]
        for v in values:
            if f.type == "dropdown":
                try:
                    validate_value("dropdown", f.options, v)
                except FieldTypeError as exc:
                    raise bad(f"filter {name}: {exc}") from None
            elif not v or len(v) > 64:
                raise bad(f"filter {name}: give a username")
        return Filter(f, values=tuple(dict.fromkeys(values)))
    if f.type in BY_RANGE:
        bounds: dict[str, str | float] = {}
        for part, got in parts.items():
            if len(got) > 1:
                raise bad(f"query parameter {name}.{part} may be given once")
            bounds[part] = _bound(f, got[0], part)
        if "is" in bounds and len(bounds) > 1:
            raise bad(f"give {name}= or {name}.from= / {name}.to=, not both")
        low, high = (bounds["is"], bounds["is"]) if "is" in bounds else (
            bounds.get("from"), bounds.get("to"))
        if low is not None and high is not None and low > high:  # type: ignore[operator]
            raise bad(f"{name}.from must not be after {name}.to")
        return Filter(f, low=low, high=high)
    raise bad(f"field {name!r} ({f.type}) cannot be filtered; search its text with q=")


def _bound(f: FieldDef, raw: str, part: str) -> str | float:
    what = f.name if part == "is" else f"{f.name}.{part}"
    if f.type == "date":
        try:
            return str(validate_value("date", {}, raw))
        except FieldTypeError as exc:
            raise bad(f"{what}: {exc}") from None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not raw.isascii() or not math.isfinite(value):
        raise bad(f"{what} must be a number, got {raw!r}")
    return value


# ---- the SQL -------------------------------------------------------------------------------


def _conditions(query: ItemQuery, item: Any) -> list[ColumnElement[bool]]:
    """What an item (its id column ``item``) must satisfy: filters and q."""
    out: list[ColumnElement[bool]] = []
    for flt in query.filters:
        g = _values.alias()
        where: list[ColumnElement[bool]] = [g.c.item_id == item, g.c.field_id == flt.field.id]
        if flt.field.type == "number":
            key: Any = num_key(g.c.value)
            where.append(is_num(g.c.value))
        else:
            key = text_key(g.c.value)
            where.append(is_text(g.c.value))
        if flt.values:
            where += [key.in_([v.lower()[:KEY_LENGTH] for v in flt.values]),
                      raw_text(g.c.value).in_(list(flt.values))]
        if flt.low is not None:
            where.append(key >= flt.low)
        if flt.high is not None:
            where.append(key <= flt.high)
        out.append(exists().where(*where))
    if query.q:
        s = _values.alias()
        pattern = "%" + query.q.replace("\\", "\\\\").replace("%", "\\%").replace(
            "_", "\\_") + "%"
        out.append(exists().where(
            s.c.item_id == item, s.c.field_id.in_([f.id for f in query.q_fields] or [-1]),
            is_text(s.c.value), raw_text(s.c.value).ilike(pattern, escape="\\")))
    return out


Row = tuple[int, int, Any]  # (segment, item id, sort key)


def segment_query(query: ItemQuery, tracker_id: int, segment: int, ascending: bool,
                  bound: tuple[Any, int] | None, limit: int) -> Any:
    """The statement for one segment of the order (bench/search.py explains these)."""
    f = query.sort_field
    if f is None or segment == 1:
        item = _items.c.id
        stmt = select(item).where(_items.c.tracker_id == tracker_id,
                                  *_conditions(query, item))
        if f is not None:
            v = _values.alias()
            has = is_num(v.c.value) if f.type == "number" else is_text(v.c.value)
            stmt = stmt.where(~exists().where(v.c.item_id == item, v.c.field_id == f.id, has))
        if bound is not None:
            stmt = stmt.where(item > bound[1] if ascending else item < bound[1])
        return stmt.order_by(item.asc() if ascending else item.desc()).limit(limit)
    v = _values.alias("sorted")
    if f.type == "number":
        key: Any = num_key(v.c.value)
        has = is_num(v.c.value)
    else:
        key, has = text_key(v.c.value), is_text(v.c.value)
    stmt = select(v.c.item_id, key).where(v.c.field_id == f.id, has,
                                          *_conditions(query, v.c.item_id))
    if bound is not None:
        pair = tuple_(key, v.c.item_id)
        stmt = stmt.where(pair > tuple_(*bound) if ascending else pair < tuple_(*bound))
    order = (key.asc(), v.c.item_id.asc()) if ascending else (key.desc(), v.c.item_id.desc())
    return stmt.order_by(*order).limit(limit)


async def _run(session: AsyncSession, query: ItemQuery, tracker_id: int, segments: list[int],
               ascending: bool, start: Cursor | None, want: int) -> list[Row]:
    rows: list[Row] = []
    for segment in segments:
        bound = (start.key, start.item) if start is not None and segment == start.segment else None
        stmt = segment_query(query, tracker_id, segment, ascending, bound, want - len(rows))
        for r in (await session.execute(stmt)).all():
            rows.append((segment, int(r[0]), r[1] if len(r) > 1 else None))
        if len(rows) >= want:
            break
    return rows


@dataclass(frozen=True)
class Page:
    items: list[Item]
    next: str | None  # a cursor to the page after, or None when this is the last
    prev: str | None  # a cursor to the page before, or None when this is the first
    next_after: int | None  # sort=id only: the last id, when more follow


async def find_items(session: AsyncSession, tracker_id: int, query: ItemQuery) -> Page:
    """One page of items in the query's order, with cursors to its neighbours.

    The order is a sequence of segments: items holding a value of the sort field (by
    key, then id), then items without one (by id): "lacking the value" comes last in
    either direction. Each segment is one indexed statement; a page that ends one
    segment continues in the next. A cursor names a position, so items added or deleted
    meanwhile never make a page repeat or skip one that stays.
    """
    segments = [0] if query.sort_field is None else [0, 1]
    cursor = query.cursor
    want = query.limit + 1
    up = not query.descending

    def at(row: Row, forward: bool) -> str:
        return Cursor(forward, query.sort, row[0], row[2], row[1]).encode()

    nxt: str | None
    prev: str | None
    if cursor is not None and not cursor.forward:
        rows = await _run(session, query, tracker_id, segments[:cursor.segment + 1][::-1],
                          not up, cursor, want)
        more_before = len(rows) > query.limit
        rows = rows[:query.limit][::-1]
        if not rows:  # everything before was deleted: show the first page
            return await find_items(session, tracker_id, ItemQuery(
                query.sort_field, query.descending, query.filters, query.q, query.q_fields,
                query.limit, None))
        prev = at(rows[0], False) if more_before else None
        nxt = at(rows[-1], True)
        more_after = True
    else:
        rows = await _run(session, query, tracker_id,
                          segments[cursor.segment:] if cursor else segments, up, cursor, want)
        more_after = len(rows) > query.limit
        rows = rows[:query.limit]
        nxt = at(rows[-1], True) if more_after and rows else None
        prev = at(rows[0], False) if cursor is not None and rows else None
    ids = [r[1] for r in rows]
    loaded = {i.id: i for i in (await session.execute(
        select(Item).where(Item.id.in_(ids)))).scalars()} if ids else {}
    items = [loaded[i] for i in ids if i in loaded]
    next_after = ids[-1] if (query.sort == "id" and more_after and ids) else None
    return Page(items, nxt, prev, next_after)
