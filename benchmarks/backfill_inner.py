"""The strategies of benchmarks/backfill.py, run inside a generated project (its packages,
its settings): one JSON object per strategy on stdout. Arguments: the database URL (with
its driver), the rows, the sample for the row loop, the project's package."""

import importlib
import json
import multiprocessing
import random
import sys
import time

import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext

url, rows, sample = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
backfill = importlib.import_module(f"{sys.argv[4]}.db.backfill").backfill
engine = sa.create_engine(url, pool_size=8, isolation_level="READ COMMITTED")
SPLIT = {  # first_name, last_name from name, as SQL
    "postgresql": (
        "split_part(name, ' ', 1)",
        "CASE WHEN strpos(name, ' ') > 0 THEN substr(name, strpos(name, ' ') + 1) ELSE '' END",
    ),
    "mysql": (
        "SUBSTRING_INDEX(name, ' ', 1)",
        "CASE WHEN LOCATE(' ', name) > 0 THEN SUBSTRING(name, LOCATE(' ', name) + 1) ELSE '' END",
    ),
}[engine.dialect.name]
NUMBERS = {
    "postgresql": f"SELECT g, 'First' || g || ' Last ' || g FROM generate_series(1, {rows}) g",
    "mysql": f"SELECT seq, CONCAT('First', seq, ' Last ', seq) FROM seq_1_to_{rows}",
}[engine.dialect.name]


def build():
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql("DROP TABLE IF EXISTS people")
        c.exec_driver_sql(
            "CREATE TABLE people (id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL, "
            "first_name VARCHAR(100), last_name VARCHAR(100), touched INTEGER NOT NULL DEFAULT 0)"
        )
        c.exec_driver_sql(f"INSERT INTO people (id, name) {NUMBERS}")
        c.exec_driver_sql(
            "VACUUM ANALYZE people"
            if engine.dialect.name == "postgresql"
            else "ANALYZE TABLE people"
        )


def write(url, rows, stop, results):
    """One app-like writer, a process of its own as an app's worker is: single-row UPDATEs
    of random rows, one transaction each, every one timed, until `stop` is set."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    statement = sa.text("UPDATE people SET touched = touched + 1 WHERE id = :id")
    waits, errors = [], []
    with engine.connect() as c:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                with c.begin():
                    c.execute(statement, {"id": random.randint(1, rows)})
            except sa.exc.DBAPIError as error:
                errors.append(str(error.orig).splitlines()[0])
            waits.append(time.perf_counter() - started)
            time.sleep(0.005)
    results.put((waits, errors))


class Writers:
    """Four writers, each in its own process (so none shares the strategy's interpreter)."""

    def __init__(self, count=4):
        context = multiprocessing.get_context("spawn")
        self.stop, self.results = context.Event(), context.Queue()
        self.processes = [
            context.Process(target=write, args=(url, rows, self.stop, self.results))
            for _ in range(count)
        ]
        self.waits, self.errors = [], []

    def __enter__(self):
        for process in self.processes:
            process.start()
        time.sleep(2)  # started and steady before the strategy starts
        return self

    def __exit__(self, *_):
        self.stop.set()
        for _ in self.processes:
            waits, errors = self.results.get()
            self.waits += waits
            self.errors += errors
        for process in self.processes:
            process.join()


def single():
    with engine.begin() as c:
        c.exec_driver_sql(f"UPDATE people SET first_name = {SPLIT[0]}, last_name = {SPLIT[1]}")


def row_loop():  # the guide's loop, on the first `sample` rows
    with engine.begin() as connection:
        users = connection.execute(
            sa.text("SELECT id, name FROM people WHERE id <= :n"), {"n": sample}
        ).fetchall()
        for user_id, name in users:
            if name:
                parts = name.split(" ", 1)
                first_name = parts[0]
                last_name = parts[1] if len(parts) > 1 else ""
                connection.execute(
                    sa.text(
                        "UPDATE people SET first_name = :first, last_name = :last WHERE id = :id"
                    ),
                    {"first": first_name, "last": last_name, "id": user_id},
                )


def helper():
    with engine.connect() as connection:
        with Operations.context(MigrationContext.configure(connection)):
            backfill("people", {"first_name": sa.text(SPLIT[0]), "last_name": sa.text(SPLIT[1])})
        connection.commit()


if __name__ == "__main__":
    for label, strategy, share, count in (
        ("single", single, 1, 4),
        ("backfill", helper, 1, 4),
        ("row loop", row_loop, rows / sample, 4),
        ("single, no writers", single, 1, 0),
        ("backfill, no writers", helper, 1, 0),
    ):
        build()
        with Writers(count) as writers:
            started = time.perf_counter()
            strategy()
            took = (time.perf_counter() - started) * share
        with engine.connect() as c:
            left = c.exec_driver_sql(
                "SELECT count(*) FROM people WHERE first_name IS NULL"
            ).scalar() - (rows - sample if label == "row loop" else 0)
        waits = sorted(writers.waits) or [0.0]
        print(
            json.dumps(
                {
                    "strategy": label,
                    "seconds": took,
                    "extrapolated": share != 1,
                    "writes": len(writers.waits),
                    "p99_ms": waits[int(len(waits) * 0.99)] * 1000,
                    "max_ms": waits[-1] * 1000,
                    "errors": writers.errors[:3],
                    "rows_left": left,
                }
            ),
            flush=True,
        )
