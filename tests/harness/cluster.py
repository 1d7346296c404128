"""Several federating instances, started together and torn down together.

Each has its own data directory, keys and database: SQLite in its data directory, or,
with ``backend="postgres"``, a PostgreSQL database of its own created for the run and
dropped after it. All are set up for federation on loopback (`FEDERATION_ENV`).
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg

from tests.harness.client import Client
from tests.harness.process import FEDERATION_ENV, STARTED, RunningInstance


def _pg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _pg(admin_url: str, sql: str) -> None:
    conn = await asyncpg.connect(_pg_dsn(admin_url), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class Cluster:
    def __init__(self, root: Path, names: list[str], *, backend: str = "sqlite",
                 pg_admin_url: str | None = None, extra_env: dict[str, str] | None = None
                 ) -> None:
        self.root = root
        self.names = names
        self.backend = backend
        self.pg_admin_url = pg_admin_url
        self.extra_env = extra_env or {}
        self.instances: dict[str, RunningInstance] = {}
        self.clients: dict[str, Client] = {}
        self._databases: list[str] = []

    def __getitem__(self, name: str) -> RunningInstance:
        return self.instances[name]

    async def start(self) -> Cluster:
        """Create every instance (``fieldcast init``), start them in parallel, wait until
        each answers ``/healthz`` and log an admin client in to each."""
        def create(name: str) -> RunningInstance:
            url = None
            if self.backend == "postgres":
                assert self.pg_admin_url, "a PostgreSQL cluster needs the server's URL"
                db = f"fc_sc_{uuid.uuid4().hex[:10]}_{name}"
                asyncio.run(_pg(self.pg_admin_url, f'CREATE DATABASE "{db}"'))
                self._databases.append(db)
                url = self.pg_admin_url.rsplit("/", 1)[0] + "/" + db
            inst = RunningInstance.create(self.root, name, database_url=url,
                                          extra_env={**FEDERATION_ENV, **self.extra_env})
            inst.start()
            return inst

        try:
            with ThreadPoolExecutor(len(self.names)) as pool:
                for inst in pool.map(create, self.names):
                    self.instances[inst.name] = inst
            for name, inst in self.instances.items():
                self.clients[name] = await Client.login(inst)
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        for inst in self.instances.values():
            inst.kill()
            STARTED.pop(inst.data_dir, None)
        if self.pg_admin_url:
            for db in self._databases:
                await _pg(self.pg_admin_url, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
