"""Engine, transactions and migrations, for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import namedtuple
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast, overload

import asyncpg
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine, event, make_url, text
from sqlalchemy.engine import Connection, Dialect, Engine, Result
from sqlalchemy.exc import MultipleResultsFound, NoResultFound
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import Executable, Select
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import await_only

S = TypeVar("S", bound=AsyncSession)
Q = TypeVar("Q", bound=Select[Any])
T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Any 64-bit constant; serializes concurrent `fieldcast serve` starts on PostgreSQL.
_MIGRATION_LOCK_ID = 0x6669656C64636173


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _setup_sqlite(engine)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def _setup_sqlite(engine: AsyncEngine | Engine) -> None:
    # pysqlite's own transaction handling would start a deferred transaction lazily; we
    # issue BEGIN ourselves so write transactions can take the write lock up front
    # (BEGIN IMMEDIATE). A deferred reader that upgrades to writer fails with SQLITE_BUSY
    # at once instead of waiting, which would turn concurrent saves into 500s.
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("fieldcast_begin", "BEGIN"))


class _ConnectionThread:
    """SQLite: a thread with a connection of its own that runs whole transactions.

    Through aiosqlite every statement is two thread hops and a wake-up of the event
    loop, several per statement with its cursor; a save's seven statements cost about
    60 of them (bench/writes.py). Here a transaction of sync statements (``write_sync``,
    ``read_sync``) is one hop, however many statements and saves it holds.
    """

    def __init__(self, url: str, name: str, begin: str) -> None:
        self.url = make_url(url).set(drivername="sqlite")  # the same file, stdlib driver
        self.begin = begin
        self.name = f"fieldcast-{name}"
        self._running: _Running | None = None  # started on first use

    def submit(self, work: Callable[[Connection], T]) -> Future[T]:
        if self._running is None:
            self._running = _Running(self)
        return self._running.thread.submit(self._running.transaction, work)

    async def close(self) -> None:
        """Close the connection and end the thread once what was submitted has run; a
        later ``submit`` starts anew (with a connection of its own), as an engine serves
        again after ``dispose``."""
        running, self._running = self._running, None
        if running is not None:
            await asyncio.wrap_future(running.thread.submit(running.close))
            running.thread.shutdown(wait=False)


class _Running:
    """One thread of a ``_ConnectionThread`` and the connection only it uses."""

    def __init__(self, owner: _ConnectionThread) -> None:
        # StaticPool: one connection, kept.
        self.engine = create_engine(owner.url, poolclass=StaticPool,
                                    connect_args={"timeout": 30, "check_same_thread": False})
        _setup_sqlite(self.engine)
        self.begin = owner.begin
        self.thread = ThreadPoolExecutor(1, thread_name_prefix=owner.name)
        self.conn: Connection | None = None

    def transaction(self, work: Callable[[Connection], T]) -> T:
        if self.conn is None or self.conn.closed or self.conn.invalidated:
            self.conn = self.engine.connect().execution_options(fieldcast_begin=self.begin)
        try:
            with self.conn.begin():
                return work(self.conn)
        except BaseException:
            # A COMMIT that failed (a deferred constraint, a full disk) leaves SQLite's
            # transaction open: a new connection starts clean.
            dbapi = self.conn.connection.dbapi_connection
            if dbapi is None or dbapi.in_transaction:
                self.conn.invalidate()
                self.conn = None
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.engine.dispose()


class Database:
    """Hands out sessions for reading and for writing.

    On SQLite, writers in this process queue on an asyncio lock rather than on SQLite's
    busy handler, which would hold a thread-pool thread per waiting writer.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.is_sqlite = url.startswith("sqlite")
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        database = make_url(url).database if self.is_sqlite else None
        # An in-memory database is one per connection: the threads' would be others.
        own_file = bool(database) and database != ":memory:" and "mode=memory" not in url
        self._writer = _ConnectionThread(url, "writer", "BEGIN IMMEDIATE") if own_file else None
        self._reader = _ConnectionThread(url, "reader", "BEGIN") if own_file else None

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with AsyncSession(self.engine, expire_on_commit=False) as session:
            async with session.begin():
                yield session

    @overload
    def write(self) -> AbstractAsyncContextManager[AsyncSession]: ...

    @overload
    def write(self, session_class: type[S]) -> AbstractAsyncContextManager[S]: ...

    def write(self, session_class: type[AsyncSession] = AsyncSession
              ) -> AbstractAsyncContextManager[AsyncSession]:
        """A write transaction, committed when the block ends. Writes that append to the
        change log open it through ``instance.changelog.ChangeLog.write`` instead."""
        return self._write(session_class)

    @asynccontextmanager
    async def _write(self, session_class: type[S]) -> AsyncIterator[S]:
        if self._write_lock is None:
            async with session_class(self.engine, expire_on_commit=False) as session:
                async with session.begin():
                    yield session
            return
        async with self._write_lock:
            conn = await self.engine.connect()
            try:
                conn = await conn.execution_options(fieldcast_begin="BEGIN IMMEDIATE")
                async with session_class(bind=conn, expire_on_commit=False) as session:
                    async with session.begin():
                        yield session
            finally:
                await conn.close()

    async def write_sync(self, work: Callable[[Connection], T]) -> T:
        """Run ``work``, sync code on a sync ``Connection``, in a write transaction
        committed when it returns (rolled back if it raises): what ``ChangeLog.unit``
        runs saves in.

        On SQLite it runs on the writer thread, holding this process's write lock until
        the transaction has ended, even if the caller is cancelled. On PostgreSQL it runs
        on an asyncpg connection of the pool, each statement awaited in turn.
        """
        if self._writer is None:
            async with self._write(AsyncSession) as session:
                conn = await session.connection()
                return await conn.run_sync(work)
        assert self._write_lock is not None
        async with self._write_lock:
            return await _outlasting(asyncio.wrap_future(self._writer.submit(work)))

    async def read_sync(self, work: Callable[[Connection], T]) -> T:
        """Run ``work``, sync code on a sync ``Connection``, in a read transaction: on
        SQLite on the reader thread, in one hop (a reader that runs after every commit,
        as the federation projector's, would pay about ten through aiosqlite)."""
        if self._reader is None:
            async with self.engine.connect() as conn, conn.begin():
                return await conn.run_sync(work)
        return await asyncio.wrap_future(self._reader.submit(work))

    def claimable(self, query: Q, *, of: Any = None) -> Q:
        """``query`` as a claim of queue rows: on PostgreSQL several processes share a
        queue, so each locks the rows it takes and skips those another has locked.
        SQLite has one writer at a time and no row locks."""
        if self.is_sqlite:
            return query
        return query.with_for_update(skip_locked=True, of=of)

    async def dispose(self) -> None:
        if self._writer is not None:
            assert self._write_lock is not None
            async with self._write_lock:  # after the transaction under way, if any
                await self._writer.close()
        if self._reader is not None:
            await self._reader.close()
        await self.engine.dispose()


async def _outlasting(done: asyncio.Future[T]) -> T:
    """``done``'s result; a cancelled caller is told so only once it has ended (the
    write lock held around this stands for the transaction on the thread)."""
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(done)
        except asyncio.CancelledError:
            if not done.done():
                cancelled = True
                continue
            raise
        except BaseException:
            if cancelled:
                raise asyncio.CancelledError from None
            raise
        if cancelled:
            raise asyncio.CancelledError
        return result


# ---- the save path's statements on SQLite's driver ---------------------------------------


class Fetched(Protocol):
    """What the save path reads of a statement's result: a SQLAlchemy ``Result``, or
    ``Rows`` from ``execute``'s fast path."""

    def all(self) -> Sequence[Any]: ...
    def first(self) -> Any: ...
    def one(self) -> Any: ...
    def scalar(self) -> Any: ...


class Rows(list[Any]):
    """Rows as named tuples, with the ``Result`` methods the save path uses."""

    def all(self) -> list[Any]:
        return self

    def first(self) -> Any:
        return self[0] if self else None

    def one(self) -> Any:
        if len(self) != 1:
            raise NoResultFound("expected one row") if not self else MultipleResultsFound(
                "expected one row")
        return self[0]

    def scalar(self) -> Any:
        return self[0][0] if self else None


class _Prepared:
    """A prebuilt Core statement compiled once for a dialect (SQLite's, asyncpg's), with
    the type conversions SQLAlchemy would apply (the dialect's bind and result
    processors)."""

    def __init__(self, statement: Executable, dialect: Dialect, keys: list[str] | None) -> None:
        compiled = cast(SQLCompiler, cast(Any, statement).compile(dialect=dialect,
                                                                  column_keys=keys))
        self.compiled = compiled
        # Defaults computed in Python at execution (a callable, a SQL expression) are the
        # execution context's: such a statement takes the usual path.
        self.fast = (not compiled.update_prefetch
                     and all(c.default is not None and c.default.is_scalar
                             for c in compiled.insert_prefetch)
                     and all(b.callable is None for b in compiled.binds.values()))
        self.sql = compiled.string
        self.expanding = any(b.expanding for b in compiled.binds.values())
        self.names = list(compiled.positiontup or ())
        self.fixed = {n: b.effective_value for n, b in compiled.binds.items()
                      if not b.required}
        self.defaults = {c.key: getattr(c.default, "arg", None)
                         for c in compiled.insert_prefetch}
        self.binds = [compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect)
                      for n in self.names]
        # Converted by the types of the columns selected or returned (text(): none).
        self.results = [c.type.dialect_impl(dialect).result_processor(dialect, None)
                        for c in getattr(statement, "exported_columns", ())]
        self.row: Any = None  # named as the SQL names them, at the first answer

    def _arguments(self, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        values = {**self.fixed, **self.defaults, **params}
        if self.expanding:
            state = self.compiled.construct_expanded_state(values)
            expanded, converts = state.parameters, state.processors
            return state.statement, [converts[n](expanded[n]) if n in converts
                                     else expanded[n] for n in state.positiontup or ()]
        return self.sql, [values[n] if proc is None else proc(values[n])
                          for n, proc in zip(self.names, self.binds, strict=True)]

    def run(self, driver: Any, params: Mapping[str, Any]) -> Rows:
        """On the stdlib sqlite3 connection ``driver``."""
        sql, args = self._arguments(params)
        cursor = driver.execute(sql, args)
        try:
            if cursor.description is None:
                return Rows()
            return self._rows([d[0] for d in cursor.description], cursor.fetchall())
        finally:
            cursor.close()

    def run_asyncpg(self, driver: Any, params: Mapping[str, Any]) -> Rows:
        """On the asyncpg connection ``driver``, from a sync function that
        ``AsyncConnection.run_sync`` runs (its greenlet awaits the driver)."""
        sql, args = self._arguments(params)
        records = await_only(driver.fetch(sql, *args))
        return self._rows(list(records[0].keys()), records) if records else Rows()

    def _rows(self, names: list[str], raw: Sequence[Any]) -> Rows:
        if self.row is None:
            # No renaming: a name a row could not carry is a ValueError, not a row whose
            # names differ from SQLAlchemy's (tests/instance/test_fast_statements.py).
            self.row = namedtuple("Row", names)  # type: ignore[misc]
            if len(self.results) != len(names):
                self.results = [None] * len(names)
        make, procs = self.row._make, self.results
        if not any(procs):
            return Rows(make(r) for r in raw)
        return Rows(make(v if p is None else p(v) for p, v in zip(procs, r, strict=True))
                    for r in raw)


_prepared: dict[tuple[Executable, frozenset[str] | None, str], _Prepared] = {}
#: Statements kept compiled at most: ``execute`` is for prebuilt statements, and one
#: built anew each call would otherwise grow the cache without end.
_PREPARED_MAX = 256


def execute(conn: Connection, statement: Executable, params: Mapping[str, Any] | None = None
            ) -> Fetched:
    """``conn.execute(statement, params)`` for the statements every save runs.

    They run on the driver's connection, compiled once: SQLAlchemy's execution (its
    context, cache key, result wrapping) cost 55-130 us a statement on this project's
    2-core machines, the stdlib sqlite3 driver 3-6 us, and a save runs about eight, on
    SQLite on the writer thread, where that time holds the GIL from the event loop. The
    same SQL, the same type conversions (the dialect's bind and result processors,
    which tests/instance/test_fast_statements.py compares with ``conn.execute``'s
    answers), in the connection's transaction: on SQLite's stdlib driver (the writer
    and reader threads) and on asyncpg (through ``run_sync``'s greenlet). Elsewhere (an
    aiosqlite connection lent by an ORM write) and for statements with defaults
    computed at execution, it is ``conn.execute``.
    """
    params = params or {}
    driver = conn.connection.driver_connection
    # Only inside the transaction the driver has begun: SQLAlchemy's asyncpg adapter
    # begins it at its first statement, and a statement sent before on the driver
    # would run on its own, its FOR UPDATE lock released at once (a concurrent save
    # would then overwrite where it must conflict). That first statement goes
    # through SQLAlchemy.
    if isinstance(driver, sqlite3.Connection) and driver.in_transaction:
        kind = "sqlite3"
    elif isinstance(driver, asyncpg.Connection) and driver.is_in_transaction():
        kind = "asyncpg"
    else:
        return conn.execute(statement, params)
    # An INSERT compiles to the columns it is given.
    keys = frozenset(params) if getattr(statement, "is_insert", False) else None
    prepared = _prepared.get((statement, keys, kind))
    if prepared is None:
        if len(_prepared) >= _PREPARED_MAX:
            return conn.execute(statement, params)
        prepared = _prepared[(statement, keys, kind)] = _Prepared(
            statement, conn.dialect, sorted(keys) if keys is not None else None)
    if not prepared.fast:
        return conn.execute(statement, params)
    if kind == "sqlite3":
        return prepared.run(driver, params)
    return prepared.run_asyncpg(driver, params)


class Savepoint(Protocol):
    def commit(self) -> None: ...
    def rollback(self) -> None: ...


class _DriverSavepoint:
    """A SAVEPOINT on SQLite's driver, for ``savepoint``."""

    def __init__(self, driver: sqlite3.Connection) -> None:
        self.driver = driver
        driver.execute("SAVEPOINT unit")

    def commit(self) -> None:
        self.driver.execute("RELEASE unit")

    def rollback(self) -> None:
        self.driver.execute("ROLLBACK TO unit")
        self.driver.execute("RELEASE unit")


def savepoint(conn: Connection) -> Savepoint:
    """``conn.begin_nested()``, on SQLite's driver as ``execute`` runs statements (the
    group commit's SAVEPOINT a save cost about 0.5 ms through SQLAlchemy, which
    compiles the clause each time). One at a time: these do not nest."""
    driver = conn.connection.driver_connection
    if isinstance(driver, sqlite3.Connection):
        return _DriverSavepoint(driver)
    return conn.begin_nested()


async def run(session: AsyncSession, statement: Executable, params: dict[str, Any]
              ) -> Result[Any]:
    """Run a prebuilt Core statement on the session's connection, in its transaction.

    For the reads that run often in an async session (the change log's). ``Session.execute``
    adds ORM bookkeeping that a Core statement on a table does not need, and building a
    statement anew costs its construction and cache key: on SQLite here one UPDATE took
    870 us built anew through the session and 481 us prebuilt on the connection
    (aiosqlite alone: 248 us). The save path's sync statements use ``execute``.
    Pending ORM changes are flushed first, as ``Session.execute`` would (autoflush), so
    statement order holds.
    """
    if session.new or session.dirty or session.deleted:
        await session.flush()
    conn = await session.connection()
    return await conn.execute(statement, params)


def _alembic_config(connection: Connection) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_ID})
    command.upgrade(_alembic_config(connection), "head")


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def run_migrations(connection: Connection, action: Callable[[Connection], None]) -> None:
    """Run `action` (Alembic commands) in one transaction. On SQLite, with foreign keys
    off until it ends, checked before it commits.

    Batch mode re-creates a SQLite table by copying it and dropping the original, and
    with foreign keys on, that DROP deletes (ON DELETE CASCADE) every row that refers to
    it: re-creating ``items`` would empty ``field_values``. The PRAGMA does nothing
    inside a transaction, so it is set on the driver's connection before ours begins.
    """
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        _driver_pragma(connection, "PRAGMA foreign_keys=OFF")
    try:
        with connection.begin():
            action(connection)
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"a migration broke foreign keys: {broken[:5]}")
    finally:
        if sqlite:
            _driver_pragma(connection, "PRAGMA foreign_keys=ON")


def _driver_pragma(connection: Connection, pragma: str) -> None:
    # Outside SQLAlchemy's transaction: a statement through the Connection would begin one.
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(pragma)
    finally:
        cursor.close()


async def migrate(engine: AsyncEngine) -> None:
    """Apply every pending migration (idempotent)."""
    async with engine.connect() as conn:
        await conn.run_sync(run_migrations, _upgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


def known_revision(revision: str) -> bool:
    """Whether `revision` is one of this code's migrations (not a newer version's)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        return ScriptDirectory.from_config(cfg).get_revision(revision) is not None
    except CommandError:
        return False


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head
