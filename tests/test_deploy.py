"""Deploying migrations safely, on real PostgreSQL, MariaDB/MySQL and SQLite databases: the
migration lock in env.py (one migrator at a time), `db check` and `db deploy` in generated
projects."""

import json
import os
import re
import signal
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from databases import connect, scratch_database, sql
from helpers import project_env, run
from projects import combinations, initial_revision, package_of, reset


@dataclass
class Project:
    path: Path
    database: str
    server: str | None
    url: str = ""  # DATABASE_URL: a fresh database of the test's own

    def env(self, **extra: str) -> dict[str, str]:
        return project_env(DATABASE_URL=self.url, **extra)

    @property
    def package(self) -> str:
        return package_of(self.path)

    def sql(self, *statements: str) -> list[list[list[str]]]:
        return sql(self.url, *statements)

    def rows(self, query: str) -> list[list[str]]:
        return self.sql(query)[0]

    def db(self, command: str, *args: str, url: str | None = None) -> subprocess.CompletedProcess:
        """`uv run db <command> ...` on this project's DATABASE_URL (or `url`)."""
        env = self.env() if url is None else project_env(DATABASE_URL=url)
        return run(["uv", "run", "db", command, *args], self.path, env, check=False)

    def alembic(self, *args: str) -> subprocess.CompletedProcess:
        return run(["uv", "run", "alembic", *args], self.path, self.env(), check=False)

    @property
    def initial(self) -> str:
        return initial_revision(self.path)

    def add_revision(
        self, rev: str, down: str, upgrade: str, downgrade: str = "pass", extra: str = ""
    ) -> None:
        source = "\n".join(
            [
                f'"""{rev} message"""',
                "",
                "import time",
                "",
                "import sqlalchemy as sa",
                "from alembic import op",
                "",
                f'revision = "{rev}"',
                f'down_revision = "{down}"',
                "branch_labels = None",
                "depends_on = None",
                extra,
                "",
                "",
                "def upgrade() -> None:",
                textwrap.indent(textwrap.dedent(upgrade).strip(), "    "),
                "",
                "",
                "def downgrade() -> None:",
                textwrap.indent(downgrade, "    "),
                "",
            ]
        )
        (self.path / "migrations" / "versions" / f"2099_01_01_0000-{rev}_test.py").write_text(
            source
        )

    def log_revisions(self, count: int, slow: str = "1") -> list[str]:
        """`count` revisions on top of the initial one: the first creates `applied`, each
        inserts its own id there (applied twice, it would be there twice)."""
        revs = [f"r{n}" for n in range(1, count + 1)]
        self.add_revision(
            "r1",
            self.initial,
            f"""
            op.create_table(
                "applied",
                sa.Column("id", sa.Integer(), primary_key=True),
                sa.Column("rev", sa.String(10), nullable=False),
            )
            op.execute("INSERT INTO applied (rev) VALUES ('r1')")
            time.sleep({slow})  # the others arrive while this one holds the lock
            """,
            'op.drop_table("applied")',
        )
        for down, rev in zip(revs, revs[1:], strict=False):
            self.add_revision(
                rev, down, f"op.execute(\"INSERT INTO applied (rev) VALUES ('{rev}')\")"
            )
        return revs


@pytest.fixture
def project_for(
    shared: Callable[[str, bool], Path],
    tmp_path: Path,
    server_url: Callable[[str], str | None],
) -> Iterator[Callable[..., Project]]:
    """The combination's generated project with a fresh, empty database in DATABASE_URL;
    revisions added by the test are removed afterwards."""
    with ExitStack() as stack:

        def make(database: str, async_mode: bool = False) -> Project:
            project = Project(shared(database, async_mode), database, server_url(database))
            stack.callback(reset, project.path)
            project.url = stack.enter_context(scratch_database(database, tmp_path))
            return project

        yield make


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("database", "async_mode"),
    combinations(
        ("postgresql", False),
        ("postgresql", True),
        ("mysql", False),
        ("sqlite", False),
        ("sqlite", True),
    ),
)
def test_eight_concurrent_upgrades_apply_each_revision_once(
    project_for: Callable[..., Project], database: str, async_mode: bool
) -> None:
    project = project_for(database, async_mode)
    revs = project.log_revisions(4)
    head = "r5"
    if database == "postgresql":  # an index built CONCURRENTLY, outside the transaction
        project.add_revision(
            "r5",
            "r4",
            """
            op.execute("INSERT INTO applied (rev) VALUES ('r5')")
            with op.get_context().autocommit_block():
                op.create_index(
                    "ix_applied_rev", "applied", ["rev"], postgresql_concurrently=True
                )
            """,
        )
    else:
        project.add_revision("r5", "r4", "op.execute(\"INSERT INTO applied (rev) VALUES ('r5')\")")
    revs.append("r5")

    migrators = [
        subprocess.Popen(
            ["uv", "run", "alembic", "upgrade", "head"],
            cwd=project.path,
            env=project.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    outputs = [(m.wait(timeout=300), *m.communicate()) for m in migrators]

    assert [code for code, _, _ in outputs] == [0] * 8, outputs
    assert sorted(row[0] for row in project.rows("SELECT rev FROM applied")) == revs
    assert project.rows("SELECT version_num FROM alembic_version") == [[head]]
    ran = [err for _, _, err in outputs if "Running upgrade r4 -> r5" in err]
    assert len(ran) == 1, outputs  # every revision by one migrator; the others did nothing
    assert any("waiting up to" in err for _, _, err in outputs), outputs


# Holds the project's migration lock, as a migrator would, until its stdin closes.
HOLD_LOCK = """
import sys
from sqlalchemy import create_engine, pool
from demo_service.core.config import to_driver_url
from demo_service.db.lock import lock_for

engine = create_engine(to_driver_url(sys.argv[1]), poolclass=pool.NullPool)
with engine.connect() as connection:
    lock = lock_for(connection)
    assert lock.acquire(set())
    print("holding", flush=True)
    sys.stdin.read()
    lock.release()
"""


SYNC = combinations(("postgresql", False), ("mysql", False), ("sqlite", False))


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), SYNC)
def test_waiting_migrator_stops_once_another_did_its_work(
    project_for: Callable[..., Project], database: str, async_mode: bool
) -> None:
    """A migrator waits while another holds the lock, but only as long as there is work left
    for it: at head already, it exits 0 at once, although the lock is still taken."""
    project = project_for(database, async_mode)
    project.log_revisions(2, slow="0")
    assert project.alembic("upgrade", "r1").returncode == 0
    holder = subprocess.Popen(
        [".venv/bin/python", "-c", HOLD_LOCK.replace("demo_service", project.package), project.url],
        cwd=project.path,
        env=project_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"

        at_r1 = project.alembic("upgrade", "r1")
        assert at_r1.returncode == 0, at_r1
        assert "waiting up to" in at_r1.stderr
        assert "another migrator brought the database to r1: nothing to do" in at_r1.stderr

        pending = run(
            ["uv", "run", "alembic", "upgrade", "head"],
            project.path,
            project.env(MIGRATION_LOCK_WAIT="1"),
            check=False,
        )
        assert pending.returncode != 0, pending  # r2 is left to do: it waited, then gave up
        assert "still holds the lock" in pending.stderr and "Traceback" not in pending.stderr
        assert project.rows("SELECT version_num FROM alembic_version") == [["r1"]]
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0
    assert project.alembic("upgrade", "head").returncode == 0
    assert project.rows("SELECT version_num FROM alembic_version") == [["r2"]]


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), SYNC)
def test_check_exit_codes(
    project_for: Callable[..., Project], database: str, async_mode: bool
) -> None:
    project = project_for(database, async_mode)
    project.log_revisions(2, slow="0")

    pending = project.db("check")
    assert pending.returncode == 1, pending
    assert "3 migrations pending" in pending.stdout
    assert "r2  r2 message" in pending.stdout
    as_json = json.loads(project.db("check", "--json").stdout)
    assert as_json["status"] == "pending" and as_json["head"] == "r2"
    assert [p["revision"] for p in as_json["pending"]] == [project.initial, "r1", "r2"]

    assert project.alembic("upgrade", "head").returncode == 0
    done = project.db("check")
    assert done.returncode == 0 and "up to date" in done.stdout, done
    assert json.loads(project.db("check", "--json").stdout)["status"] == ("up_to_date")

    project.sql("UPDATE alembic_version SET version_num = 'f00dfeed'")
    unknown = project.db("check")
    assert unknown.returncode == 2
    assert "f00dfeed" in one_line(unknown.stderr)
    project.sql("UPDATE alembic_version SET version_num = 'r2'")

    project.add_revision("r3", "r1", "pass")  # a second head next to r2
    heads = project.db("check", "--json")
    assert heads.returncode == 2
    assert "2 heads" in one_line(heads.stderr)
    assert json.loads(heads.stdout)["status"] == "cannot_tell"


POSTGRESQL = combinations(("postgresql", False))


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), POSTGRESQL)
def test_unreachable_database_and_malformed_url_give_one_line(
    project_for: Callable[..., Project], database: str, async_mode: bool
) -> None:
    project = project_for(database, async_mode)
    unreachable = "postgresql://demo:secret-pw@127.0.0.1:1/demo"
    for name in ("check", "deploy"):
        done = project.db(name, url=unreachable)
        assert done.returncode == 2, done
        line = one_line(done.stderr)
        assert "cannot reach the database at" in line and "127.0.0.1:1" in line
        assert "secret-pw" not in done.stderr + done.stdout

        malformed = project.db(name, url="not a url at all")
        assert malformed.returncode == 2, malformed
        assert "DATABASE_URL" in one_line(malformed.stderr)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("database", "async_mode"),
    combinations(("postgresql", False), ("sqlite", False), ("sqlite", True), ("mysql", False)),
)
def test_failed_revision_leaves_the_last_good_revision(
    project_for: Callable[..., Project], database: str, async_mode: bool
) -> None:
    project = project_for(database, async_mode)
    project.log_revisions(2, slow="0")
    assert project.alembic("upgrade", "r1").returncode == 0
    project.sql("INSERT INTO applied (rev) VALUES ('data')")
    project.add_revision(
        "r3",
        "r2",
        """
        op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))
        op.execute("INSERT INTO no_such_table VALUES (1)")
        """,
        'op.drop_table("half_done")',
    )

    failed = project.db("deploy")  # a real backup first

    assert failed.returncode == 1, failed
    line = failed.stderr.strip().splitlines()[-1]
    assert "revision r3 (r3 message) failed" in line, failed.stderr
    assert "the database is at r2" in line
    assert "Traceback" not in failed.stderr
    assert project.rows("SELECT version_num FROM alembic_version") == [["r2"]]
    assert sorted(r[0] for r in project.rows("SELECT rev FROM applied")) == ["data", "r1", "r2"]
    check = project.db("check")
    assert check.returncode == 1 and "r3  r3 message" in check.stdout
    tables = {
        "postgresql": "SELECT count(*) FROM pg_tables WHERE tablename = 'half_done'",
        "sqlite": "SELECT count(*) FROM sqlite_master WHERE name = 'half_done'",
        "mysql": "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_NAME = 'half_done'"
        " AND TABLE_SCHEMA = DATABASE()",
    }[database]
    if database == "mysql":  # DDL commits at once there: the verdict says what stayed
        assert "part of it stayed applied" in line and "table half_done added" in line, line
        restore = line.split("restore the backup taken first with: ", 1)[1].split(";")[0]
        backup = Path(restore.split()[4])
        assert restore == f"uv run db restore {backup} --yes" and backup.is_file()
        assert project.rows(tables) == [["1"]]
        project.sql("DROP TABLE half_done")
    else:  # rolled back whole: a restore would only lose rows written since the backup
        assert "it was rolled back whole" in line and "nothing to restore" in line, line
        assert "db restore" not in line
        assert project.rows(tables) == [["0"]]  # nothing of the failed revision

    project.add_revision(
        "r3",
        "r2",
        'op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))',
        'op.drop_table("half_done")',
    )
    fixed = project.db("deploy", "--no-backup")
    assert fixed.returncode == 0, fixed
    assert "done: r2 -> r3" in fixed.stderr
    assert project.db("check").returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), combinations(("postgresql", True)))
def test_deploy_writes_sql_and_does_nothing_at_head(
    project_for: Callable[..., Project], database: str, async_mode: bool
) -> None:
    project = project_for(database, async_mode)
    project.log_revisions(1, slow="0")

    sql = project.db("deploy", "--sql")
    assert sql.returncode == 0, sql
    assert "CREATE TABLE applied" in sql.stdout and "lock_timeout" in sql.stdout
    assert project.db("check").returncode == 1  # nothing was applied

    first = project.db("deploy", "--no-backup")
    assert first.returncode == 0, first
    assert "done: base (no revision applied) -> r1" in first.stderr
    again = project.db("deploy")
    assert again.returncode == 0 and "nothing to do" in again.stderr, again


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), SYNC)
def test_deploy_in_two_phases_around_a_rollout(
    project_for: Callable[..., Project], database: str, async_mode: bool
) -> None:
    """`db deploy --phase expand` runs the revisions before the first contract one, so the
    release still running keeps its column; `--phase contract`, after the rollout, runs the
    rest (the drop, behind a backup that must restore users' rows)."""
    project = project_for(database, async_mode)
    project.add_revision(
        "exp1",
        project.initial,
        'op.add_column("users", sa.Column("nickname", sa.String(50), nullable=True))',
        'with op.batch_alter_table("users") as batch_op:\n    batch_op.drop_column("nickname")',
    )
    project.add_revision(
        "con1",
        "exp1",
        'with op.batch_alter_table("users") as batch_op:\n    batch_op.drop_column("full_name")',
        'op.add_column("users", sa.Column("full_name", sa.String(255), nullable=True))',
        extra='phase = "contract"\nallow_destructive = "no release reads full_name"',
    )

    sql = project.db("deploy", "--sql", "--phase", "expand")
    assert sql.returncode == 0, sql
    assert "nickname" in sql.stdout and "full_name" not in sql.stdout.split("exp1")[-1], sql
    expand = project.db("deploy", "--no-backup", "--phase", "expand")
    assert expand.returncode == 0, expand
    assert "2 migration(s) pending" in expand.stderr, expand.stderr
    assert "1 contract revision(s) wait for: db deploy --phase contract" in expand.stderr
    assert project.rows("SELECT version_num FROM alembic_version") == [["exp1"]]
    again = project.db("deploy", "--phase", "expand", "--json")
    assert again.returncode == 0, again
    assert "the next revision, con1, is a contract revision: nothing to do" in again.stderr
    assert json.loads(again.stdout)["phase"] == "expand"
    assert project.db("check").returncode == 1  # con1 is still pending

    project.sql(
        "INSERT INTO users (email, full_name, created_at) "
        "VALUES ('a@b.c', 'A', '2026-01-01 00:00:00')"
    )
    contract = project.db("deploy", "--phase", "contract")
    assert contract.returncode == 0, contract
    assert "con1 drops or renames (users)" in contract.stderr, contract.stderr
    assert "done: exp1 -> con1" in contract.stderr, contract.stderr
    assert project.rows("SELECT version_num FROM alembic_version") == [["con1"]]
    assert project.rows("SELECT email, nickname FROM users") == [["a@b.c", "None"]]


BACKFILL_ROWS = 60_000
NUMBERS = {  # INSERT ... SELECT of the ids 1 to BACKFILL_ROWS, as each database writes it
    "postgresql": f"SELECT g, 0 FROM generate_series(1, {BACKFILL_ROWS}) AS g",
    "mysql": f"SELECT seq, 0 FROM seq_1_to_{BACKFILL_ROWS}",  # MariaDB's sequence engine
    "sqlite": (
        "SELECT x, 0 FROM (WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n "
        f"WHERE x < {BACKFILL_ROWS}) SELECT x FROM n)"
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("database", "async_mode"),
    combinations(("postgresql", False), ("postgresql", True), ("mysql", False), ("sqlite", False)),
)
def test_a_backfill_killed_half_way_resumes_and_updates_each_row_once(
    project_for: Callable[..., Project], database: str, async_mode: bool
) -> None:
    """db/backfill.py adds 1 to every row's `hits`, which is not idempotent: a deploy killed
    (SIGKILL) at about 40% and run again ends with every row at 1, starting from the
    position it stored; `--sql` gives one set-based UPDATE instead."""
    project = project_for(database, async_mode)
    project.add_revision(
        "bf1",
        project.initial,
        'op.create_table("items", sa.Column("id", sa.Integer(), primary_key=True), '
        'sa.Column("hits", sa.Integer(), nullable=False))',
        'op.drop_table("items")',
    )
    project.add_revision(
        "bf2",
        "bf1",
        'backfill("items", {"hits": sa.text("hits + 1")}, batch_size=500, largest_batch=500, '
        "pause=0.02)",
        extra=f"from {project.package}.db.backfill import backfill\n\ndata_migration = True",
    )
    sql = project.db("deploy", "--sql")
    assert sql.returncode == 0, sql
    assert "-- db/backfill.py runs this UPDATE of items in primary-key batches" in sql.stdout
    assert "UPDATE items SET hits=hits + 1" in sql.stdout, sql.stdout
    assert project.alembic("upgrade", "bf1").returncode == 0
    project.sql(f"INSERT INTO items (id, hits) {NUMBERS[database]}")

    migrator = subprocess.Popen(
        ["uv", "run", "db", "deploy", "--no-backup"],
        cwd=project.path,
        env=project.env(),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    done, deadline = 0, time.monotonic() + 120
    while done < BACKFILL_ROWS * 0.4 and time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            found = project.rows("SELECT rows_done FROM migration_backfills")
        except sa.exc.DBAPIError:  # the backfill has not created its table yet
            continue
        done = int(found[0][0]) if found else 0
    os.killpg(migrator.pid, signal.SIGKILL)
    migrator.wait()
    assert BACKFILL_ROWS * 0.4 <= done < BACKFILL_ROWS, f"killed at {done} rows"
    (stored,) = project.rows("SELECT rows_done, last_key FROM migration_backfills")
    updated = project.rows("SELECT count(*) FROM items WHERE hits = 1")[0][0]
    assert updated == stored[0], f"{updated} rows updated, {stored[0]} recorded"
    assert project.rows("SELECT count(*) FROM items WHERE hits > 1") == [["0"]]

    again = project.db("deploy", "--no-backup")
    assert again.returncode == 0, again
    assert f"backfill items: resuming after key {stored[1]} ({stored[0]} rows updated before)" in (
        again.stderr
    ), again.stderr
    assert project.rows("SELECT hits, count(*) FROM items GROUP BY hits") == [
        ["1", str(BACKFILL_ROWS)]
    ]
    assert project.rows("SELECT count(*) FROM migration_backfills") == [["0"]]
    assert project.rows("SELECT version_num FROM alembic_version") == [["bf2"]]


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), POSTGRESQL)
def test_sigkill_mid_upgrade_leaves_a_consistent_state_and_frees_the_lock(
    project_for: Callable[..., Project], database: str, async_mode: bool
) -> None:
    project = project_for(database, async_mode)
    project.log_revisions(1, slow="0")
    project.add_revision(
        "r2",
        "r1",
        """
        op.create_table("slow", sa.Column("id", sa.Integer(), primary_key=True))
        op.execute("INSERT INTO applied (rev) VALUES ('r2')")
        if not __import__("os").environ.get("FAST"):
            op.execute("SELECT pg_sleep(60)")
        """,
        'op.drop_table("slow")',
    )
    migrator = subprocess.Popen(
        [".venv/bin/alembic", "upgrade", "head"],
        cwd=project.path,
        env=project.env(),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    sleeping = (
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
        " AND datname = current_database()"
    )
    while project.rows(sleeping) != [["1"]]:
        assert time.monotonic() < deadline and migrator.poll() is None, migrator.stderr
        time.sleep(0.2)
    os.killpg(migrator.pid, signal.SIGKILL)
    migrator.wait()

    assert project.rows("SELECT version_num FROM alembic_version") == [["r1"]]
    assert project.rows("SELECT rev FROM applied") == [["r1"]]
    start = time.monotonic()
    rerun = run(["uv", "run", "alembic", "upgrade", "head"], project.path, project.env(FAST="1"))
    # The lock lives on the killed migrator's server session: the rerun waits, if at all,
    # only until the server has noticed the client is gone and ended that session.
    waited = re.search(r"got the lock after ([\d.]+)s", rerun.stderr)
    assert waited is None or float(waited.group(1)) < 5, rerun.stderr
    assert time.monotonic() - start < 30
    assert project.rows("SELECT version_num FROM alembic_version") == [["r2"]]
    assert sorted(r[0] for r in project.rows("SELECT rev FROM applied")) == ["r1", "r2"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("database", "async_mode"), combinations(("postgresql", False), ("mysql", False))
)
def test_statement_that_cannot_get_a_table_lock_is_retried(
    project_for: Callable[..., Project], database: str, async_mode: bool
) -> None:
    """MIGRATION_LOCK_TIMEOUT gives up quickly (MariaDB: at once, under a second); the
    revision is tried again and succeeds once the app's long transaction has let the table
    go. Without retries left, `db deploy` says where the database is and to deploy again."""
    project = project_for(database, async_mode)
    project.log_revisions(1, slow="0")
    assert project.alembic("upgrade", "head").returncode == 0
    project.add_revision("r2", "r1", 'op.add_column("applied", sa.Column("note", sa.Text()))')
    env = project.env(MIGRATION_LOCK_TIMEOUT="200ms")

    with long_transaction_on_applied(project):
        done = run(["uv", "run", "alembic", "upgrade", "head"], project.path, env)
    assert "trying again in 1s (1 of 5)" in done.stderr, done.stderr
    assert project.rows("SELECT version_num FROM alembic_version") == [["r2"]]

    project.add_revision("r3", "r2", 'op.add_column("applied", sa.Column("more", sa.Text()))')
    deploy = ["uv", "run", "db", "deploy", "--no-backup"]
    with long_transaction_on_applied(project):
        failed = run(deploy, project.path, {**env, "MIGRATION_LOCK_RETRIES": "0"}, check=False)
    line = failed.stderr.strip().splitlines()[-1]
    assert failed.returncode == 1 and "revision r3 (r3 message) failed" in line, failed.stderr
    assert "the database is at r2" in line and "deploy again once the app's long" in line, line
    assert project.rows("SELECT version_num FROM alembic_version") == [["r2"]]


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), combinations(("mysql", False)))
def test_a_table_the_app_writes_to_all_the_time_still_gets_its_change(
    project_for: Callable[..., Project], database: str, async_mode: bool
) -> None:
    """Under a second, MariaDB's statements do not wait for a lock at all: with the app
    inserting into a table without pause, an ALTER often finds it busy. A revision of
    twelve of them still gets through: quick tries first, then statements that wait 1 s
    (for the inserts running then, not for 1 s); with only tries that do not wait it ran
    out of retries. The writers are never stopped."""
    project = project_for(database, async_mode)
    project.log_revisions(1, slow="0")
    assert project.alembic("upgrade", "head").returncode == 0
    columns = "\n".join(
        f'op.add_column("applied", sa.Column("c{n}", sa.Integer()), if_not_exists=True)'
        for n in range(12)
    )
    project.add_revision("r2", "r1", columns)
    stop, inserted = threading.Event(), []

    def write() -> None:
        with connect(project.url, isolation_level="AUTOCOMMIT") as connection:
            while not stop.is_set():
                connection.execute(sa.text("INSERT INTO applied (rev) VALUES ('app')"))
                inserted.append(1)

    writers = [threading.Thread(target=write) for _ in range(2)]
    for writer in writers:
        writer.start()
    try:
        done = run(["uv", "run", "alembic", "upgrade", "head"], project.path, project.env())
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    assert done.returncode == 0, done.stderr
    assert project.rows("SELECT version_num FROM alembic_version") == [["r2"]]
    assert len(inserted) > 100


@contextmanager
def long_transaction_on_applied(project: Project) -> Iterator[None]:
    """The app's long transaction: it holds a lock on the table `applied` for 4 seconds
    (MariaDB: the metadata lock of a transaction that has read it)."""
    if project.database == "postgresql":
        statements = ("BEGIN", "LOCK TABLE applied", "SELECT pg_sleep(4)", "COMMIT")
        waiting = "SELECT count(*) FROM pg_locks WHERE relation = 'applied'::regclass"
    else:
        statements = ("BEGIN", "SELECT * FROM applied", "SELECT SLEEP(4)", "COMMIT")
        waiting = (
            "SELECT count(*) FROM information_schema.processlist WHERE info LIKE 'SELECT SLEEP%'"
        )
    holder = threading.Thread(target=sql, args=(project.url, *statements))
    holder.start()
    deadline = time.monotonic() + 30
    while project.rows(waiting) == [["0"]]:  # until it holds the lock
        assert time.monotonic() < deadline and holder.is_alive()
        time.sleep(0.1)
    yield
    holder.join(timeout=30)
