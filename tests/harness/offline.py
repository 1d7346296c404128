"""``python -m tests.harness.offline DATABASE_URL ITEM FIELD JSON_VALUE``: save one field
as the admin, through the change log, with no server running (the harness's "edits made
while the instance was down"). The server reads the log from its durable cursors when it
starts again, as it would after any write by another process."""

from __future__ import annotations

import asyncio
import json
import sys

from sqlalchemy import select

from instance import items
from instance.changelog import ChangeLog
from instance.db import Database
from instance.models import User
from instance.rights import principal_for


async def main(url: str, item: int, field_name: str, value: object) -> None:
    db = Database(url)
    try:
        async with ChangeLog(db).write() as session:
            admin = (await session.execute(select(User).where(User.username == "admin"))
                     ).scalar_one()
            who = await principal_for(session, admin)
            await session.sync(lambda log: items.save_field(log, item, field_name, value, who,
                                                            if_match=None))
    finally:
        await db.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])))
