"""Alembic environment. fieldcast calls migrations itself (`instance.db.migrate`) and
passes the connection in; developers may also run
`alembic -c instance/migrations/alembic.ini -x url=sqlite:///scratch.db revision --autogenerate`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from instance.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("pass a synchronous database URL with -x url=...")
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn)
