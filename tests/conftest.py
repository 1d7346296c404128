"""Fixtures: a fresh database per test on SQLite and on PostgreSQL, and a logged-in client.

PostgreSQL: set FIELDCAST_TEST_POSTGRES_URL (default: the local server's `postgres`
database). Each run migrates one template database, and each test clones it, so tests
never see each other's data. Outside CI an unreachable server skips those tests; under
CI=true it fails them, and the run fails if no PostgreSQL (or no Redis) test passed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from quart import Quart
from quart.testing import QuartClient

from instance import accounts
from instance.app import create_app
from instance.config import Settings
from instance.db import Database, make_engine, migrate

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get(
    "FIELDCAST_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
RUN_ID = uuid.uuid4().hex[:8]
PASSWORD = "correct horse battery"


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_db(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


async def _pg_exec(sql: str) -> None:
    conn = await asyncpg.connect(_dsn(PG_ADMIN_URL), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _migrate_url(url: str) -> None:
    engine = make_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    asyncio.run(_migrate_url(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    name = f"fc_tmpl_{RUN_ID}"
    try:
        asyncio.run(_pg_exec(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {exc!r}"
        if IN_CI:
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    asyncio.run(_migrate_url(_with_db(PG_ADMIN_URL, name)))
    yield name
    asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "fieldcast.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    template = request.getfixturevalue("pg_template")
    name = f"fc_t_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg_exec(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield _with_db(PG_ADMIN_URL, name)
    asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def fast_settings(tmp_path: Path, database_url: str, **changes: Any) -> Settings:
    # Cheap Argon2 parameters: hashing would otherwise dominate the suite's run time.
    return Settings(
        data_dir=tmp_path, database_url=database_url, argon2_time_cost=1,
        argon2_memory_kib=8, argon2_parallelism=1, test_strict_answers=True, **changes,
    ).replace()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return fast_settings(tmp_path, database_url)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Quart]:
    app = create_app(settings, database=Database(settings.effective_database_url))
    async with app.test_app():
        yield app


@dataclass
class Env:
    """An app and helpers to make users and log them in."""

    app: Quart

    @property
    def state(self) -> Any:
        return self.app.extensions["fieldcast"]

    async def user(self, username: str, *, admin: bool = False, groups: tuple[str, ...] = ()
                   ) -> None:
        async with self.state.change_log.write() as session:
            await accounts.create_user(
                session, self.state.passwords, username=username, password=PASSWORD,
                is_admin=admin, groups=list(groups),
            )

    async def client(self, username: str | None = None) -> QuartClient:
        client = self.app.test_client()
        if username is not None:
            response = await client.post(
                "/api/login", json={"username": username, "password": PASSWORD}
            )
            assert response.status_code == 200, await response.get_data(as_text=True)
        return client


@pytest.fixture
async def env(app: Quart) -> Env:
    e = Env(app)
    await e.user("admin", admin=True)
    return e


# ---- CI guard: the PostgreSQL suite must have run -----------------------------------------

_passed: dict[str, int] = {"postgres": 0, "redis": 0}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call" or not report.passed:
        return
    params = report.nodeid.partition("[")[2].rstrip("]")
    if "postgres" in params.split("-"):
        _passed["postgres"] += 1
    if "redis" in report.keywords:
        _passed["redis"] += 1


def _missing() -> list[str]:
    return [name for name, count in _passed.items() if count == 0]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if IN_CI and _missing() and session.testscollected:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(f"fieldcast: {_passed['postgres']} PostgreSQL tests passed")
    terminalreporter.write_line(f"fieldcast: {_passed['redis']} Redis tests passed")
    if IN_CI and _missing():
        terminalreporter.write_line(
            f"fieldcast: CI=true but no {' or '.join(_missing())} test passed: failing the run",
            red=True,
        )
