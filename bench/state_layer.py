"""What the DB layer costs per accepted command: the state store's thin DB-API path against
the same transaction written with SQLAlchemy Core, on SQLite (WAL, synchronous=FULL) and on
PostgreSQL.

    .venv/bin/python bench/state_layer.py [-n 2000] [--postgres URL]

An accept is one transaction: claim the dedup key (a conditional upsert), insert the command,
its delivery and its history row, confirm the key. SQLAlchemy is not a dependency of the
project: install it next to the venv to compare (PYTHONPATH=/tmp/sa_lib); without it only
the store is measured. PostgreSQL: `--postgres` or DATABASE_URL (a scratch database is
created and dropped).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.domain.state import Claim  # noqa: E402
from service.state import SqlStateStore, migrate  # noqa: E402
from service.state.engine import PostgresEngine, SQLiteEngine  # noqa: E402
from tests.state.conftest import make_command  # noqa: E402
from tests.support_postgres import ScratchDatabase  # noqa: E402


def accept_with_store(store: SqlStateStore, number: int) -> None:
    command = make_command(number)
    with store.transaction():
        assert store.claim(f"cmd:{command.command_id}", 60) is Claim.CLAIMED
        store.enqueue(command)
        store.confirm(f"cmd:{command.command_id}", 604800)


def sqlalchemy_accept(url: str) -> Any:
    """The same accept with SQLAlchemy Core constructs over the same (migrated) tables."""
    import sqlalchemy as sa

    if url.startswith("sqlite"):
        from sqlalchemy.dialects.sqlite import insert as upsert

        engine = sa.create_engine(url, isolation_level=None)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")

        @sa.event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        from sqlalchemy.dialects.postgresql import insert as upsert

        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    meta = sa.MetaData()
    dedup = sa.Table("dedup", meta, autoload_with=engine)
    commands = sa.Table("commands", meta, autoload_with=engine)
    deliveries = sa.Table("deliveries", meta, autoload_with=engine)
    history = sa.Table("history", meta, autoload_with=engine)

    def accept(number: int) -> None:
        command = make_command(number)
        key = f"cmd:{command.command_id}"
        now = time.time()
        with engine.begin() as db:
            claim = upsert(dedup).values(key=key, state="pending", expires_at=now + 60)
            claim = claim.on_conflict_do_update(
                index_elements=[dedup.c.key],
                set_={"state": "pending", "expires_at": claim.excluded.expires_at},
                where=dedup.c.expires_at <= now,
            ).returning(dedup.c.key)
            assert db.execute(claim).first() is not None
            seq = db.execute(
                sa.insert(commands)
                .values(
                    command_id=command.command_id, lead_key=command.lead_key, source=command.source,
                    event_type=command.event_type, occurred_at=command.occurred_at.isoformat(), received_at=now,
                    body=command.to_json(), lead_id=command.lead.id, lead_email=command.lead.email,
                    lead_phone=command.lead.phone,
                )
                .returning(commands.c.seq)
            ).scalar_one()  # fmt: skip
            db.execute(
                sa.insert(deliveries),
                [{"command_id": command.command_id, "provider": p, "seq": seq, "lead_key": command.lead_key,
                  "status": "pending", "next_attempt_at": now, "updated_at": now} for p in command.providers],
            )  # fmt: skip
            db.execute(
                sa.insert(history).values(
                    command_id=command.command_id,
                    provider=None,
                    at=now,
                    status="received",
                    detail=command.source,
                )
            )
            db.execute(
                sa.update(dedup).where(dedup.c.key == key).values(state="done", expires_at=now + 604800)
            )

    return accept, engine.dispose


def measure(label: str, accept: Any, n: int, offset: int) -> None:
    for number in range(offset, offset + 50):  # warm-up: connections, statement caches
        accept(number)
    timings = []
    for number in range(offset + 50, offset + 50 + n):
        started = time.perf_counter()
        accept(number)
        timings.append((time.perf_counter() - started) * 1e6)
    timings.sort()
    print(
        f"{label:<34} mean {statistics.fmean(timings):8.0f} us   p50 {timings[len(timings) // 2]:8.0f} us"
        f"   p99 {timings[int(len(timings) * 0.99)]:8.0f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--postgres", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    try:
        import sqlalchemy  # noqa: F401

        have_sqlalchemy = True
    except ImportError:
        have_sqlalchemy = False
        print("SQLAlchemy not importable: measuring the store only")

    with tempfile.TemporaryDirectory() as scratch:
        for name in ("store", "sqlalchemy"):
            path = Path(scratch) / f"{name}.db"
            engine = SQLiteEngine(path)
            migrate(engine)
            if name == "store":
                store = SqlStateStore(engine)
                measure(
                    "sqlite  thin DB-API (the store)", lambda i, s=store: accept_with_store(s, i), args.n, 0
                )
            elif have_sqlalchemy:
                accept, close = sqlalchemy_accept(f"sqlite:///{path}")
                measure("sqlite  SQLAlchemy Core", accept, args.n, 0)
                close()
            engine.close()
    if not args.postgres:
        print("no PostgreSQL (--postgres or DATABASE_URL): skipped")
        return
    for name in ("store", "sqlalchemy"):
        database = ScratchDatabase(args.postgres)
        try:
            engine = PostgresEngine(database.conninfo, pool_size=2)
            migrate(engine)
            if name == "store":
                store = SqlStateStore(engine)
                measure(
                    "postgresql thin DB-API (the store)",
                    lambda i, s=store: accept_with_store(s, i),
                    args.n,
                    0,
                )
            elif have_sqlalchemy:
                accept, close = sqlalchemy_accept(database.url)
                measure("postgresql SQLAlchemy Core", accept, args.n, 0)
                close()
            engine.close()
        finally:
            database.drop()


if __name__ == "__main__":
    main()
