"""The production path under attack (issue 11): what an operator's worst day does to `db
deploy`, `db check`, `db backup` and Alembic in generated projects, on real PostgreSQL,
MariaDB and SQLite databases. Each test is one attack; it asserts what the operator sees
(one line, the exit status, no password) and that no row is lost or misplaced.

| attack | databases |
| --- | --- |
| run from a directory whose `.env` names another database | all |
| a URL without a database name | PostgreSQL, MariaDB |
| an unencoded `@` in the password | PostgreSQL, MariaDB |
| a driver named in the URL but not installed | all |
| a revision whose parent does not exist | one project |
| `db backup` killed: no file with the password; its partial file removed next time | PG, MariaDB |
| a MySQL password with `"` followed by `#` | MariaDB |
| a revision that raises a Python error | SQLite, PostgreSQL, MariaDB |
| a backup damaged in the middle: the restore changes nothing | PostgreSQL, MariaDB |
| a half-applied revision, then restore and redeploy: they converge | PostgreSQL, MariaDB |
| a restore behind an open transaction gives up after --lock-timeout | PostgreSQL, MariaDB |
| a deploy that never got the lock: nothing changed, no restore suggested | all |
| the migrating connection cut: the migrator stops, the next converges | PostgreSQL |
| a non-ASCII password: app, Alembic, check, backup, restore | PostgreSQL, MariaDB, sync+async |
| deploys started together take one backup between them | all |
| `--keep` prunes only this server's backups | PostgreSQL, MariaDB |
| CREATE INDEX CONCURRENTLY killed half-way: the next deploy builds it again | PostgreSQL |
| a migrator killed while its statement runs on: the next waits, then says what is left | MariaDB |
| a lossy dump before a column is dropped: deploy refuses; sound twin passes | all |
| the backup check while the app writes to the table at risk | PostgreSQL, MariaDB, sync+async |
| a user who may not create the scratch database: told what to grant | PostgreSQL, MariaDB |
| a MySQL restore into a database with a view: refused, nothing changed | MariaDB |

Killing the migrator before each statement of a new revision is the rendered suite's own
test (`test_new_revisions_converge_after_a_crash`), proved in test_migration_suite.py.
"""

import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from databases import SERVERS, connect, scratch_database, sql
from helpers import one_line_failure, project_env, run
from projects import combinations, initial_revision, reset

SYNC = combinations(("sqlite", False), ("postgresql", False), ("mysql", False))
SERVERS_ONLY = combinations(("postgresql", False), ("mysql", False))
OTHER_DRIVER = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
OTHER_DRIVER["mysql"] = "mysql+aiomysql"


@pytest.fixture
def project(shared: Callable[[str, bool], Path], database: str, async_mode: bool) -> Iterator[Path]:
    """The combination's shared project; its files and its `.env` put back afterwards."""
    path = shared(database, async_mode)
    env_file = path / ".env"
    saved = env_file.read_bytes()
    yield path
    env_file.write_bytes(saved)
    reset(path)


def db(
    project: Path, *args: str, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess:
    """The project's `db` command, run from `cwd` (the project by default) as an operator
    would, with `env` on top of the environment (DATABASE_URL unset unless given)."""
    command = [str(project / ".venv" / "bin" / "db"), *args]
    return run(command, cwd or project, project_env(**env), check=False)


def tables(url: str) -> set[str]:
    """The tables of the database at `url`."""
    backend = urlsplit(url).scheme
    query = {
        "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table'",
        "postgresql": "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
        "mysql": "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()",
    }[backend]
    return {row[0] for row in sql(url, query)[0]}


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), SYNC)
def test_a_command_run_from_another_directory_uses_the_projects_settings(
    project: Path, tmp_path: Path, database: str
) -> None:
    """Attack 1: an operator runs `db deploy` from a directory with a `.env` of its own. The
    project's settings decide: the backup, the migration and the printed path all concern
    the project's database; the other database is left alone."""
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, project / "backups", ignore_errors=True)
        if database == "sqlite":  # a relative path: the project's root, not the caller's
            ours, theirs = "sqlite:///./faults.db", f"sqlite:///{tmp_path / 'elsewhere.db'}"
            ours_file = project / "faults.db"
            stack.callback(ours_file.unlink, missing_ok=True)
        else:
            ours = stack.enter_context(scratch_database(database, tmp_path))
            theirs = stack.enter_context(scratch_database(database, tmp_path))
        (project / ".env").write_text(f"DATABASE_URL={ours}\n")
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / ".env").write_text(f"DATABASE_URL={theirs}\n")

        deployed = db(project, "deploy", cwd=elsewhere)

        assert deployed.returncode == 0, deployed.stderr
        target = re.search(r"pending on (\S+), from", deployed.stderr)  # it says which
        assert target, deployed.stderr
        backup = re.search(r"backup: (\S+)$", deployed.stderr, re.M)
        assert backup and Path(backup.group(1)).parent == project / "backups", deployed.stderr
        if database == "sqlite":
            assert Path(backup.group(1)).name.startswith("faults-"), backup.group(1)
            assert target.group(1) == str(ours_file), target.group(1)
            assert "alembic_version" in tables(f"sqlite:///{ours_file}")
            assert not (elsewhere / "faults.db").exists()
        else:
            ours_name = urlsplit(ours).path.lstrip("/")
            assert Path(backup.group(1)).name.startswith(f"{ours_name}@"), backup.group(1)
            assert target.group(1) == f"127.0.0.1:{urlsplit(ours).port}/{ours_name}", target
            assert "alembic_version" in tables(ours)
        assert "alembic_version" not in tables(theirs)
        checked = db(project, "check", cwd=elsewhere)
        assert checked.returncode == 0 and "up to date" in checked.stdout, checked


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), SERVERS_ONLY)
def test_a_url_the_server_would_complete_silently_is_refused(project: Path, database: str) -> None:
    """Attacks 2 and "an unencoded @": a URL without a database name (the server would pick
    the user's database, or none; backups fell back to `postgres`/`mysql`), and a password
    with a raw `@` (its end was taken for the host and shown). One line, nothing done."""
    server = "127.0.0.1:5432" if database == "postgresql" else "127.0.0.1:3306"
    no_name = f"{database}://root:pw@{server}"
    raw_at = f"{database}://app:s3cret@Tail@{server}/app"
    backups = project / "backups"  # other tests of this project may have left theirs

    def listing() -> set[str]:
        return {p.name for p in backups.iterdir()} if backups.exists() else set()

    before = listing()
    for url, reason in ((no_name, "names no database"), (raw_at, "unencoded @")):
        for command, status in (("check", 2), ("deploy", 2), ("backup", 1)):
            done = db(project, command, DATABASE_URL=url)
            line = one_line_failure(done, f"db {command}")
            assert done.returncode == status, (command, done)
            assert reason in line and "Tail" not in done.stdout + done.stderr, line
    assert listing() == before, "a refused URL still wrote a backup"


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), SYNC)
def test_a_driver_that_is_not_installed_is_one_line(
    project: Path, tmp_path: Path, database: str
) -> None:
    """ "Also": a URL naming a driver the project does not install was a traceback and exit
    1. Now one line that names the package, and `db check`/`db deploy` exit 2 (nothing was
    done); Alembic prints the same line after FAILED."""
    if database == "sqlite":
        url = f"{OTHER_DRIVER[database]}:///{tmp_path / 'x.db'}"
    else:
        port = 5432 if database == "postgresql" else 3306
        url = f"{OTHER_DRIVER[database]}://u:pw@127.0.0.1:{port}/x"
    for command, status in (("check", 2), ("deploy", 2)):
        done = db(project, command, DATABASE_URL=url)
        line = one_line_failure(done, f"db {command}")
        assert done.returncode == status and "is not installed" in line, (command, done)
    alembic = run(
        [str(project / ".venv" / "bin" / "alembic"), "upgrade", "head"],
        project,
        project_env(DATABASE_URL=url),
        check=False,
    )
    assert alembic.returncode != 0 and "Traceback" not in alembic.stderr, alembic.stderr
    assert "is not installed" in alembic.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), combinations(("sqlite", False)))
def test_a_revision_whose_parent_is_missing_is_a_verdict_not_a_traceback(
    project: Path, tmp_path: Path
) -> None:
    """A revision file whose down_revision names no revision: `db check` and `db deploy`
    exit 2 with Alembic's reason in one line, and migrate nothing."""
    versions = project / "migrations" / "versions"
    (versions / "2099_01_01_0000-orphan1_orphan.py").write_text(
        '"""orphan"""\n\nrevision = "orphan1"\ndown_revision = "deadbeef"\n'
        "branch_labels = None\ndepends_on = None\n\n\ndef upgrade() -> None:\n    pass\n\n\n"
        "def downgrade() -> None:\n    pass\n"
    )
    url = f"sqlite:///{tmp_path / 'app.db'}"
    for command in ("check", "deploy"):
        done = db(project, command, DATABASE_URL=url)
        line = one_line_failure(done, f"db {command}")
        assert done.returncode == 2, done
        assert "deadbeef" in line and "orphan1" in line, line
    assert not (tmp_path / "app.db").exists() or "alembic_version" not in tables(url)


# What shows that a backup tool waits for the table lock the test holds.
DUMP_WAITS = {
    "postgresql": "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'db backup' "
    "AND wait_event_type = 'Lock'",
    "mysql": "SELECT count(*) FROM information_schema.processlist "
    "WHERE state LIKE 'Waiting for table metadata lock%'",
}
HOLD_TABLE = {
    "postgresql": "LOCK TABLE users IN ACCESS EXCLUSIVE MODE",
    "mysql": "LOCK TABLES users WRITE",
}


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), SERVERS_ONLY)
def test_a_killed_backup_leaves_no_password_and_its_partial_file_is_removed(
    project: Path, tmp_path: Path, database: str
) -> None:
    """Attack 9: `db backup` killed with SIGKILL while its dump tool runs. Nothing that
    holds the password was ever written to the temporary directory, so nothing is left
    there: the tools get it in their own environment."""
    password = f"Pw{secrets.token_hex(6)}"
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    with scratch_database(database, tmp_path, password) as url:
        run(
            [str(project / ".venv" / "bin" / "alembic"), "upgrade", "head"],
            project,
            project_env(DATABASE_URL=url),
        )
        with connect(url) as holder:
            holder.execute(sa.text(HOLD_TABLE[database]))  # the dump will wait for it
            output = str(tmp_path / "backups")
            backup = launch(
                project,
                "db",
                "backup",
                "--output-dir",
                output,
                DATABASE_URL=url,
                TMPDIR=str(temporary),
            )
            wait_for(lambda: sql(url, DUMP_WAITS[database])[0] != [["0"]], backup, seconds=30)
            written = [p for p in temporary.rglob("*") if p.is_file()]
            os.killpg(backup.pid, signal.SIGKILL)
            backup.wait()
            holder.rollback()
        # "Also": the next backup removes the killed one's partial file, and only that.
        again = db(project, "backup", "--output-dir", str(tmp_path / "backups"), DATABASE_URL=url)
        assert again.returncode == 0, again.stderr
        assert "left by a backup that did not finish" in again.stderr, again.stderr
    kept = sorted(p.name for p in (tmp_path / "backups").iterdir())
    assert kept == [Path(again.stdout.splitlines()[-1]).name], kept
    holding = [p for p in written if password in p.read_text(errors="replace")]
    assert holding == [], f"files with the password while the dump ran: {holding}"
    assert [p for p in temporary.rglob("*")] == [], "the killed backup left files behind"


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), combinations(("mysql", False)))
def test_a_mysql_password_with_a_quote_then_a_hash_backs_up_and_restores(
    project: Path, tmp_path: Path
) -> None:
    """Attack 10: a password with `"` followed by `#` was cut at the `#` in the option file
    (a comment there): backups said "Access denied". Backup and restore work."""
    password = f"Pw\"#{secrets.token_hex(4)}'x;"
    with scratch_database("mysql", tmp_path, password) as url:
        env = {"DATABASE_URL": url}
        upgraded = run(
            [str(project / ".venv" / "bin" / "alembic"), "upgrade", "head"],
            project,
            project_env(**env),
            check=False,
        )
        assert upgraded.returncode == 0, upgraded.stderr
        made = db(project, "backup", "--output-dir", str(tmp_path / "backups"), **env)
        assert made.returncode == 0, made.stderr
        path = made.stdout.splitlines()[-1]
        restored = db(project, "restore", path, "--yes", **env)
        assert restored.returncode == 0, restored.stderr
        for done in (made, restored):
            assert password not in done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), SYNC)
def test_a_revision_that_raises_a_python_error_gets_a_verdict(
    project: Path, tmp_path: Path, database: str
) -> None:
    """ "Also": a revision raising a Python error (a data check, a bug) was a traceback with
    no verdict. Now one line: which revision failed, with the error, where the database is,
    and that it changed nothing, so nothing is to be restored; exit 1."""
    versions = project / "migrations" / "versions"
    parent = initial_revision(project)
    (versions / "2099_01_01_0000-boom01_boom.py").write_text(
        f'"""boom"""\n\nrevision = "boom01"\ndown_revision = "{parent}"\n'
        "branch_labels = None\ndepends_on = None\n\n\ndef upgrade() -> None:\n"
        '    raise RuntimeError("users hold rows this revision cannot convert")\n\n\n'
        "def downgrade() -> None:\n    pass\n"
    )
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, project / "backups", ignore_errors=True)
        url = stack.enter_context(scratch_database(database, tmp_path))
        done = db(project, "deploy", DATABASE_URL=url)
        line = done.stderr.strip().splitlines()[-1]  # after the list of pending revisions
        assert done.returncode == 1 and "Traceback" not in done.stderr, done
        assert "revision boom01" in line, line
        assert "RuntimeError: users hold rows this revision cannot convert" in line, line
        assert "the database is at " in line and "nothing to restore" in line, line
        assert "db restore" not in line, line


def fingerprint(url: str) -> dict[str, tuple[int, str]]:
    """Every table of the database at `url`: its row count and a hash of all its rows."""
    result = {}
    with connect(url) as connection:
        quote = connection.dialect.identifier_preparer.quote
        for table in sorted(tables(url)):
            rows = sorted(
                repr(tuple(r)) for r in connection.execute(sa.text(f"SELECT * FROM {quote(table)}"))
            )
            result[table] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16])
    return result


def populated(project: Path, url: str, users: int = 3000) -> None:
    """Migrate the database at `url` to head and give it `users` users with a post each."""
    upgraded = run(
        [str(project / ".venv" / "bin" / "alembic"), "upgrade", "head"],
        project,
        project_env(DATABASE_URL=url),
        check=False,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    with connect(url) as connection:
        connection.execute(
            sa.text(
                "INSERT INTO users (id, email, full_name, created_at) "
                "VALUES (:id, :email, :name, CURRENT_TIMESTAMP)"
            ),
            [
                {"id": i, "email": f"u{i}@example.org", "name": f"Zoë {i}"}
                for i in range(1, users + 1)
            ],
        )
        connection.execute(
            sa.text(
                "INSERT INTO posts (title, body, author_id, created_at) "
                "VALUES (:title, :body, :author, CURRENT_TIMESTAMP)"
            ),
            [
                {"title": f"post {i}", "body": "ünïcode — 日本語", "author": i}
                for i in range(1, users + 1)
            ],
        )
        connection.commit()


def scratch_left(database: str, url: str) -> list[str]:
    """Scratch databases a restore or a backup check left on the server: `<name>_restore_*`
    (MySQL's restore works in two, checks use the first; PostgreSQL's checks in one)."""
    name = urlsplit(url).path.lstrip("/")
    if database == "postgresql":
        query = f"SELECT datname FROM pg_database WHERE datname LIKE '{name}\\_restore%'"
    elif database == "mysql":
        query = f"SHOW DATABASES LIKE '{name}\\_restore%'"
    else:
        return []
    return [row[0] for row in sql(url, query)[0]]


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), SERVERS_ONLY)
def test_a_damaged_backup_leaves_the_database_unchanged(
    project: Path, tmp_path: Path, database: str
) -> None:
    """Attack 8: a backup damaged in the middle passed the header/footer check; the restore
    dropped a table and reloaded half of it. Now the restore fails with one line saying the
    database is unchanged, and it is, row for row."""
    with scratch_database(database, tmp_path) as url:
        populated(project, url)
        made = db(project, "backup", "--output-dir", str(tmp_path / "backups"), DATABASE_URL=url)
        assert made.returncode == 0, made.stderr
        backup = Path(made.stdout.splitlines()[-1])
        damaged = tmp_path / f"damaged{backup.suffix}"
        data = bytearray(backup.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 64] = b"\x00garbage\xff" * 8
        damaged.write_bytes(data)
        sql(url, "DELETE FROM posts WHERE id > 2000", "DELETE FROM users WHERE id > 2000")
        before = fingerprint(url)

        done = db(project, "restore", str(damaged), "--yes", DATABASE_URL=url)

        line = one_line_failure(done, "db restore")
        assert done.returncode == 1 and "is unchanged" in line, line
        assert fingerprint(url) == before
        assert scratch_left(database, url) == []


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), SERVERS_ONLY)
def test_after_a_half_applied_revision_restore_and_redeploy_converge(
    project: Path, tmp_path: Path, database: str
) -> None:
    """Attack 7: a revision created a table, then failed. On MySQL the table stayed (no
    transactional DDL); the restore kept it (it is not in the backup), and the fixed revision
    then failed with "already exists": recovery never converged. On PostgreSQL, a table and
    an enum type created since the backup, with a foreign key to a restored table, made
    `pg_restore --clean` fail. Now the restore leaves exactly the backup's tables and rows,
    and the fixed revision deploys."""
    versions = project / "migrations" / "versions"
    parent = initial_revision(project)
    revision = versions / "2099_01_01_0000-later01_later.py"
    body = (
        f'"""later"""\n\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        f'revision = "later01"\ndown_revision = "{parent}"\nbranch_labels = None\n'
        "depends_on = None\n\n\ndef upgrade() -> None:\n"
        '    op.create_table("later", sa.Column("id", sa.Integer(), primary_key=True),\n'
        '        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id")))\n'
        "    FAIL\n\n\ndef downgrade() -> None:\n"
        '    op.drop_table("later")\n'
    )
    with scratch_database(database, tmp_path) as url:
        populated(project, url)
        made = db(project, "backup", "--output-dir", str(tmp_path / "backups"), DATABASE_URL=url)
        assert made.returncode == 0, made.stderr
        backup = made.stdout.splitlines()[-1]
        saved = fingerprint(url)
        revision.write_text(body.replace("FAIL", 'raise RuntimeError("half-way")'))
        failed = db(project, "deploy", "--no-backup", DATABASE_URL=url)
        assert failed.returncode == 1, failed.stderr
        if database == "postgresql":  # the failed revision rolled back: objects from elsewhere
            sql(
                url,
                "CREATE TYPE mood AS ENUM ('calm')",
                "CREATE TABLE later (id int PRIMARY KEY, user_id int REFERENCES users, m mood)",
                "INSERT INTO later VALUES (1, 1, 'calm')",
            )
        assert "later" in tables(url)

        restored = db(project, "restore", backup, "--yes", DATABASE_URL=url)

        assert restored.returncode == 0, restored.stderr
        assert fingerprint(url) == saved
        if database == "postgresql":
            assert sql(url, "SELECT typname FROM pg_type WHERE typname = 'mood'")[0] == []
        revision.write_text(body.replace("FAIL", "pass"))
        deployed = db(project, "deploy", "--no-backup", DATABASE_URL=url)
        assert deployed.returncode == 0, deployed.stderr
        assert sql(url, "SELECT version_num FROM alembic_version")[0] == [["later01"]]
        assert scratch_left(database, url) == []


# A reader in an open transaction: what the restore must wait for, then give up on.
READ_IN_TRANSACTION = "SELECT count(*) FROM users"


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), SERVERS_ONLY)
def test_a_restore_behind_an_open_transaction_gives_up_in_time(
    project: Path, tmp_path: Path, database: str
) -> None:
    """ "Also": a restore behind an open transaction waited silently for ever. Now it gives
    up after --lock-timeout with one line that says why, and nothing changed."""
    with scratch_database(database, tmp_path) as url:
        populated(project, url, users=200)
        made = db(project, "backup", "--output-dir", str(tmp_path / "backups"), DATABASE_URL=url)
        assert made.returncode == 0, made.stderr
        sql(url, "DELETE FROM posts WHERE id > 100", "DELETE FROM users WHERE id > 100")
        before = fingerprint(url)
        with connect(url) as holder:
            holder.execute(sa.text(READ_IN_TRANSACTION))  # its transaction stays open
            start = time.monotonic()
            done = db(
                project,
                "restore",
                made.stdout.splitlines()[-1],
                "--yes",
                "--lock-timeout",
                "1",
                DATABASE_URL=url,
            )
            took = time.monotonic() - start
            holder.rollback()
        line = one_line_failure(done, "db restore")
        assert "locked for 1s" in line and "nothing was restored" in line, line
        assert took < 30, f"the restore gave up only after {took:.0f}s"
        assert fingerprint(url) == before
        assert scratch_left(database, url) == []


SERVER_SLEEP = {"postgresql": "pg_sleep", "mysql": "SLEEP"}


def sleeping_revision(project: Path, marker: Path, seconds: float, server: str = "") -> None:
    """A new head revision that creates the table `slept`, then touches `marker` and
    sleeps `seconds` holding the migration lock: in Python, or in the `server` database
    (pg_sleep, SLEEP). SLEEP in its environment sets other seconds."""
    sleep = (
        f'op.execute(f"SELECT {SERVER_SLEEP[server]}({{seconds}})")'
        if server
        else "time.sleep(seconds)"
    )
    (project / "migrations" / "versions" / "2099_01_01_0000-slow01_slow.py").write_text(
        f'"""slow"""\n\nimport os\nimport time\nfrom pathlib import Path\n\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f'revision = "slow01"\ndown_revision = "{initial_revision(project)}"\n'
        "branch_labels = None\ndepends_on = None\n\n\ndef upgrade() -> None:\n"
        '    op.create_table("slept", sa.Column("id", sa.Integer(), primary_key=True))\n'
        f"    Path({str(marker)!r}).touch()\n"
        f'    seconds = float(os.environ.get("SLEEP", {seconds}))\n'
        f"    if seconds:\n        {sleep}\n\n\n"
        'def downgrade() -> None:\n    op.drop_table("slept")\n'
    )


def launch(project: Path, program: str, *args: str, **env: str) -> subprocess.Popen:
    """The project's `program` (db, alembic) started in the background as an operator would,
    with `env` on top of the environment, in a session of its own (os.killpg reaches its
    children too); its stderr is captured."""
    return subprocess.Popen(
        [str(project / ".venv" / "bin" / program), *args],
        cwd=project,
        env=project_env(**env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), SYNC)
def test_a_deploy_that_never_got_the_lock_says_nothing_changed(
    project: Path, tmp_path: Path, database: str
) -> None:
    """Attack 3: every failure suggested restoring the backup, also when the deploy merely
    waited too long for another migrator's lock, and following it threw away every row
    written since. Now: one line that says another migrator holds the lock and nothing was
    migrated, no restore; the other migrator finishes its work."""
    marker = tmp_path / "started"
    sleeping_revision(project, marker, seconds=8)
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, project / "backups", ignore_errors=True)
        url = stack.enter_context(scratch_database(database, tmp_path))
        other = launch(project, "alembic", "upgrade", "head", DATABASE_URL=url)
        stack.callback(other.kill)
        wait_for(marker.exists, other)

        done = db(project, "deploy", DATABASE_URL=url, MIGRATION_LOCK_WAIT="1")

        assert other.wait(timeout=60) == 0, other.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "another migrator still holds the lock" in line, line
    assert "nothing was migrated" in line and "restore" not in line, line


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), combinations(("postgresql", False)))
def test_a_migrator_whose_connection_is_cut_stops_and_the_next_converges(
    project: Path, tmp_path: Path
) -> None:
    """Attack 5: the server closed the idle connection that held the lock while another
    connection migrated, and a second migrator ran at the same time. The lock lives on the
    migrating connection: cutting it (pg_terminate_backend, as idle and statement timeouts
    do) stops the migrator at once, its revision rolled back, with a verdict that needs no
    restore; the migrator waiting behind it then migrates, once."""
    marker = tmp_path / "started"
    sleeping_revision(project, marker, seconds=60, server="postgresql")
    with ExitStack() as stack:
        url = stack.enter_context(scratch_database("postgresql", tmp_path))
        first = launch(project, "db", "deploy", "--no-backup", DATABASE_URL=url)
        stack.callback(first.kill)
        wait_for(marker.exists, first)
        marker.unlink()
        # SLEEP: long enough for the first to give its verdict before this one is done
        second = launch(project, "alembic", "upgrade", "head", DATABASE_URL=url, SLEEP="3")
        stack.callback(second.kill)
        waiting = "another migrator holds the lock"
        time.sleep(2)  # the second is waiting for the lock now
        assert second.poll() is None and not marker.exists()
        name = urlsplit(url).path.lstrip("/")
        cut = sql(
            url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
            f"'{name}' AND query LIKE 'SELECT pg_sleep%'",
        )[0]
        assert cut == [["True"]], cut
        start = time.monotonic()
        _, stderr = first.communicate(timeout=30)
        stopped_after = time.monotonic() - start
        _, second_stderr = second.communicate(timeout=60)
        version = sql(url, "SELECT version_num FROM alembic_version")[0]
    line = stderr.strip().splitlines()[-1]
    assert first.returncode == 1 and "Traceback" not in stderr, stderr
    assert "rolled back whole" in line and "nothing to restore" in line, line
    assert stopped_after < 10, f"the cut migrator went on for {stopped_after:.0f}s"
    assert second.returncode == 0 and waiting in second_stderr, second_stderr
    assert version == [["slow01"]]


# The app's health check through its own engine, as a request would reach it.
HEALTH = """
from fastapi.testclient import TestClient
from {package}.main import app
with TestClient(app) as client:
    response = client.get("/health")
    print(response.status_code, response.json()["database"])
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("database", "async_mode"),
    combinations(("postgresql", False), ("postgresql", True), ("mysql", False), ("mysql", True)),
)
def test_a_non_ascii_password_works_in_the_app_migrations_backup_and_restore(
    project: Path, tmp_path: Path, database: str
) -> None:
    """Attack 10: the MySQL drivers encoded passwords as latin-1: `ü` was denied, `€` a
    `UnicodeEncodeError` traceback, and /health answered 500. Now the app, Alembic,
    `db check`, `db backup` and `db restore` all connect, sync and async, and the password
    appears in no output."""
    password = "Zoë-€-日本-ü"
    package = next(project.glob("src/*/main.py")).parent.name
    with scratch_database(database, tmp_path, password) as url:
        env = project_env(DATABASE_URL=url)
        python = str(project / ".venv" / "bin" / "python")
        alembic = str(project / ".venv" / "bin" / "alembic")
        done = [run([alembic, "upgrade", "head"], project, env, check=False)]
        done.append(db(project, "check", DATABASE_URL=url))
        done.append(db(project, "backup", "--output-dir", str(tmp_path / "b"), DATABASE_URL=url))
        backup = done[-1].stdout.strip().splitlines()[-1] if done[-1].returncode == 0 else "-"
        done.append(db(project, "restore", backup, "--yes", DATABASE_URL=url))
        health = run([python, "-c", HEALTH.format(package=package)], project, env, check=False)
    for step in [*done, health]:
        assert step.returncode == 0, (step.args, step.stderr[-2000:])
        assert password not in step.stdout + step.stderr
    assert health.stdout.split() == ["200", "ok"], health.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), SYNC)
def test_concurrent_deploys_take_one_backup_between_them(
    project: Path, tmp_path: Path, database: str
) -> None:
    """ "Also": deploys started together each took a full backup before waiting for the
    lock (the docs said only the first did). The backup is now taken under the lock: the
    deploy that waited finds the database at head and says so, with no backup of its own."""
    marker = tmp_path / "started"
    sleeping_revision(project, marker, seconds=4)
    backups = project / "backups"
    shutil.rmtree(backups, ignore_errors=True)
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, backups, ignore_errors=True)
        url = stack.enter_context(scratch_database(database, tmp_path))
        first = launch(project, "db", "deploy", DATABASE_URL=url)
        stack.callback(first.kill)
        wait_for(marker.exists, first)

        second = db(project, "deploy", DATABASE_URL=url)

        _, first_stderr = first.communicate(timeout=60)
        written = sorted(p.name for p in backups.iterdir())
    assert first.returncode == 0, first_stderr
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stderr.strip().splitlines()[-1], second.stderr
    assert len(written) == 1, written


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), SERVERS_ONLY)
def test_keep_prunes_only_this_servers_backups(
    project: Path, tmp_path: Path, database: str
) -> None:
    """ "Also": `--keep` pruned the backups of another server's database of the same name
    (staging's `app` and production's `app` backed up into one directory). Backup names now
    carry the server; `--keep` removes only this one's, and leaves names it cannot place."""
    out = tmp_path / "backups"
    out.mkdir()
    extension = "dump" if database == "postgresql" else "sql"
    with scratch_database(database, tmp_path) as url:
        name = urlsplit(url).path.lstrip("/")
        others = [
            f"{name}@db.staging.example-5432-20200101T000000.000Z-base.{extension}",
            f"{name}-20200101T000000.000Z-base.{extension}",  # named before the server was
        ]
        for other in others:
            (out / other).write_text("another server's backup")
        made = [
            db(project, "backup", "--output-dir", str(out), "--keep", "1", DATABASE_URL=url)
            for _ in range(2)
        ]
    assert all(done.returncode == 0 for done in made), [done.stderr for done in made]
    newest = Path(made[-1].stdout.splitlines()[-1]).name
    assert newest.startswith(f"{name}@127.0.0.1-"), newest
    assert sorted(p.name for p in out.iterdir()) == sorted([*others, newest])


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), combinations(("postgresql", False)))
def test_a_concurrent_index_build_killed_half_way_is_built_again(
    project: Path, tmp_path: Path
) -> None:
    """Attack 6, mid-statement: the migrator killed while CREATE INDEX CONCURRENTLY waits
    for an old transaction leaves an INVALID index, with the version unchanged; a plain
    rerun then failed with "already exists". db/online.py's helper drops the leftover and
    builds the index again: the next deploy converges, with a valid index."""
    building = (
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type IS NOT NULL "
        "AND query LIKE 'CREATE INDEX CONCURRENTLY%'"
    )
    index = (
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = 'ix_users_full_name'"
    )
    with scratch_database("postgresql", tmp_path) as url:
        populated(project, url, users=500)
        package = next(project.glob("src/*/main.py")).parent.name
        (project / "migrations" / "versions" / "2099_01_01_0000-cic01_cic.py").write_text(
            f'"""cic"""\n\nfrom {package}.db.online import create_index_concurrently, '
            "drop_index_concurrently\n\n"
            f'revision = "cic01"\ndown_revision = "{initial_revision(project)}"\n'
            "branch_labels = None\ndepends_on = None\n\n\ndef upgrade() -> None:\n"
            '    create_index_concurrently("ix_users_full_name", "users", ["full_name"])\n\n\n'
            "def downgrade() -> None:\n"
            '    drop_index_concurrently("ix_users_full_name", "users")\n'
        )
        with connect(url, isolation_level="REPEATABLE READ") as holder:
            holder.execute(sa.text("SELECT count(*) FROM users"))  # an old snapshot, kept
            migrator = launch(
                project,
                "db",
                "deploy",
                "--no-backup",
                DATABASE_URL=url,
                MIGRATION_LOCK_TIMEOUT="60s",
            )
            wait_for(lambda: sql(url, building)[0] == [["1"]], migrator)
            os.killpg(migrator.pid, signal.SIGKILL)
            migrator.wait()
            # The server notices the client is gone (client_connection_check_interval) and
            # cancels the build, while the old transaction still holds it up.
            deadline = time.monotonic() + 10
            while sql(url, building)[0] != [["0"]]:
                assert time.monotonic() < deadline, "the killed build went on in the server"
                time.sleep(0.1)
            holder.rollback()
        left = sql(url, index, "SELECT version_num FROM alembic_version")

        again = db(project, "deploy", "--no-backup", DATABASE_URL=url)

        after = sql(url, index, "SELECT version_num FROM alembic_version")
    assert left == [[["False"]], [[initial_revision(project)]]], left
    assert again.returncode == 0, again.stderr
    assert after == [[["True"]], [["cic01"]]], after


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), combinations(("mysql", False)))
def test_a_killed_mysql_migrator_keeps_the_lock_while_its_statement_runs(
    project: Path, tmp_path: Path
) -> None:
    """Attack 4: on MySQL/MariaDB a migrator killed with SIGKILL freed the lock while its
    statement went on in the server, and a second migrator ran the same revision meanwhile.
    The lock lives on the migrating connection: the server holds it until the killed
    statement ends, so the next deploy waits. It then finds the part of the revision that
    was committed (MySQL commits each DDL statement) and says so, instead of suggesting a
    restore that would not help or claiming nothing stayed."""
    marker = tmp_path / "started"
    sleeping_revision(project, marker, seconds=6, server="mysql")
    with ExitStack() as stack:
        url = stack.enter_context(scratch_database("mysql", tmp_path))
        first = launch(project, "db", "deploy", "--no-backup", DATABASE_URL=url)
        stack.callback(first.kill)
        sleeping = (
            "SELECT count(*) FROM information_schema.processlist WHERE info LIKE 'SELECT SLEEP%'"
        )
        wait_for(lambda: sql(url, sleeping)[0] == [["1"]], first)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        start = time.monotonic()
        second = db(project, "deploy", "--no-backup", DATABASE_URL=url, SLEEP="0")
        waited = time.monotonic() - start
        version = sql(url, "SELECT version_num FROM alembic_version")[0]
    line = second.stderr.strip().splitlines()[-1]
    assert "another migrator holds the lock" in second.stderr, second.stderr
    assert waited > 2, f"the next deploy did not wait for the killed statement ({waited:.1f}s)"
    assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr
    assert "in the database already, left by an earlier run" in line, line
    assert version == [[initial_revision(project)]], version


def destructive_revisions(project: Path) -> None:
    """Two new revisions: `legacy01` adds the nullable column posts.legacy (the release
    before stops using it), `drop01` drops it, saying why that is safe. The tests apply the
    first, fill the column, then deploy the second."""
    versions = project / "migrations" / "versions"
    header = '"""{doc}"""\n\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
    (versions / "2099_01_01_0000-legacy01_legacy.py").write_text(
        header.format(doc="legacy")
        + f'revision = "legacy01"\ndown_revision = "{initial_revision(project)}"\n'
        "branch_labels = None\ndepends_on = None\n\n\ndef upgrade() -> None:\n"
        '    op.add_column("posts", sa.Column("legacy", sa.String(50), nullable=True))\n\n\n'
        'def downgrade() -> None:\n    op.drop_column("posts", "legacy")\n'
    )
    (versions / "2099_01_02_0000-drop01_drop.py").write_text(
        header.format(doc="drop posts.legacy")
        + 'revision = "drop01"\ndown_revision = "legacy01"\nbranch_labels = None\n'
        'depends_on = None\nallow_destructive = "nothing has read posts.legacy since 2.3"\n\n\n'
        "def upgrade() -> None:\n"
        '    with op.batch_alter_table("posts") as batch_op:\n'
        '        batch_op.drop_column("legacy")\n\n\n'
        "def downgrade() -> None:\n"
        '    op.add_column("posts", sa.Column("legacy", sa.String(50), nullable=True))\n'
    )


def before_the_drop(project: Path, url: str) -> None:
    """Populated at legacy01, posts.legacy filled: what `drop01` puts at risk."""
    destructive_revisions(project)
    drop = project / "migrations" / "versions" / "2099_01_02_0000-drop01_drop.py"
    saved = drop.read_text()
    drop.unlink()  # populated() upgrades to head: legacy01, for now
    try:
        populated(project, url)
    finally:
        drop.write_text(saved)
    sql(url, "UPDATE posts SET legacy = 'ünïcode — 日本語'")


def new_files(directory: Path, existing: set[Path]) -> set[Path]:
    """The files in `directory` that are not in `existing` (the shared project's backups/
    may hold other tests' backups)."""
    return set(directory.iterdir()) - existing if directory.exists() else set()


# A dump tool that loses what a restore needs, as a wrapper found first on PATH: PostgreSQL's
# skips the rows of a table, MariaDB's writes the dump in latin1 (characters outside it become
# `?`, the row count stays the same).
LOSSY_DUMP = {
    "postgresql": ("pg_dump", "--exclude-table-data=posts"),
    "mysql": ("mariadb-dump", "--default-character-set=latin1"),
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("database", "async_mode", "lossy"),
    [
        pytest.param(
            *combination.values, lossy, id=f"{combination.id}-{kind}dump", marks=combination.marks
        )
        for combination in SYNC
        for lossy, kind in ((True, "lossy-"), (False, "sound-"))
        if not (lossy and combination.values[0] == "sqlite")  # its dump is Python's own
    ],
)
def test_a_backup_that_does_not_restore_the_rows_stops_a_destructive_deploy(
    project: Path, tmp_path: Path, database: str, lossy: bool
) -> None:
    """Restore-verified gate: before a revision drops a column, `db deploy` restores its
    fresh backup into a scratch database and compares the rows of the table at risk with the
    live ones. A dump tool that loses rows or characters refuses the deploy: exit 1, nothing
    migrated, no backup kept, no scratch database left. With the sound tool (the twin), the
    same deploy checks the backup and drops the column."""
    path = os.environ["PATH"]
    if lossy:
        tool, option = LOSSY_DUMP[database]
        (tmp_path / tool).write_text(f'#!/bin/sh\nexec {shutil.which(tool)} "$@" {option}\n')
        (tmp_path / tool).chmod(0o755)
        path = f"{tmp_path}:{path}"
    backups = project / "backups"
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, backups, ignore_errors=True)
        url = stack.enter_context(scratch_database(database, tmp_path))
        before_the_drop(project, url)
        before = fingerprint(url)
        existing = new_files(backups, set())

        done = db(project, "deploy", DATABASE_URL=url, PATH=path)

        after = fingerprint(url)
        version = sql(url, "SELECT version_num FROM alembic_version")[0]
        left = scratch_left(database, url)
        written = sorted(p.name for p in new_files(backups, existing))
    assert "drop01 drops or renames (posts)" in done.stderr, done.stderr
    assert left == [], left
    if lossy:
        line = done.stderr.strip().splitlines()[-1]
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "the backup does not restore what" in line and "table posts" in line, line
        assert "nothing was migrated" in line, line
        assert after == before and version == [["legacy01"]]
        assert written == [], written
    else:
        assert done.returncode == 0, done.stderr
        assert "the backup restores 1 table(s), 3000 rows, checksums equal" in done.stderr
        assert version == [["drop01"]] and after["posts"][0] == 3000
        assert len(written) == 1, written


@pytest.mark.slow
@pytest.mark.parametrize(
    ("database", "async_mode"),
    combinations(("postgresql", False), ("mysql", False), ("postgresql", True), ("mysql", True)),
)
def test_the_backup_check_holds_while_the_app_writes_to_the_table_at_risk(
    project: Path, tmp_path: Path, database: str
) -> None:
    """The live rows and the backup are compared as of one moment: PostgreSQL's checksums
    run in the snapshot pg_dump imports; MariaDB's in a snapshot started with the dump's
    while the table stood still for a moment. Comparing with the table as it is after the
    dump would fail whenever the app inserts meanwhile; here a writer inserts posts all
    through the deploy, which checks its backup, drops the column and keeps every row."""
    backups = project / "backups"
    stop, inserted, errors = threading.Event(), [], []

    def write(url: str) -> None:
        with connect(url, isolation_level="AUTOCOMMIT") as connection:
            while not stop.is_set():
                try:
                    connection.execute(
                        sa.text(
                            "INSERT INTO posts (title, body, author_id, created_at) "
                            "VALUES ('live', 'written during the deploy', 1, CURRENT_TIMESTAMP)"
                        )
                    )
                    inserted.append(1)
                except sa.exc.DBAPIError as error:
                    errors.append(str(error.orig))
                    return

    with ExitStack() as stack:
        stack.callback(shutil.rmtree, backups, ignore_errors=True)
        url = stack.enter_context(scratch_database(database, tmp_path))
        before_the_drop(project, url)
        writer = threading.Thread(target=write, args=(url,))
        writer.start()
        stack.callback(writer.join)
        stack.callback(stop.set)
        deadline = time.monotonic() + 30
        while len(inserted) < 20 and not errors and time.monotonic() < deadline:
            time.sleep(0.05)

        done = db(project, "deploy", DATABASE_URL=url)

        during = len(inserted)
        stop.set()
        writer.join()
        rows = sql(url, "SELECT count(*) FROM posts")[0][0][0]
    assert errors == [], errors
    assert done.returncode == 0, done.stderr
    assert "checksums equal" in done.stderr, done.stderr
    assert int(rows) == 3000 + len(inserted) and during > 20


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), SERVERS_ONLY)
def test_a_user_who_may_not_create_the_scratch_database_is_told_what_to_grant(
    project: Path, tmp_path: Path, database: str
) -> None:
    """The backup check and (MySQL) the restore work in a scratch database next to the
    target. A deploying user without the right to create it (a PostgreSQL role without
    CREATEDB, a MySQL user without the `<db>_restore_%` grant) gets one line with the
    statement to run, and nothing changes."""
    backups = project / "backups"
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, backups, ignore_errors=True)
        url = stack.enter_context(scratch_database(database, tmp_path, password="pw-0"))
        name = urlsplit(url).path.lstrip("/")
        if database == "mysql":
            sql(SERVERS[database], f"REVOKE ALL ON `{name}\\_restore\\_%`.* FROM '{name}'@'%'")
        before_the_drop(project, url)
        before = fingerprint(url)
        made = db(project, "backup", "--output-dir", str(tmp_path / "b"), DATABASE_URL=url)
        assert made.returncode == 0, made.stderr
        existing = new_files(backups, set())

        deployed = db(project, "deploy", DATABASE_URL=url)
        restored = db(project, "restore", made.stdout.splitlines()[-1], "--yes", DATABASE_URL=url)

        after = fingerprint(url)
        written = sorted(p.name for p in new_files(backups, existing))
    escaped = name.replace("_", "\\_")  # `_` in a grant's database name matches any character
    grant = "CREATEDB" if database == "postgresql" else f"GRANT ALL ON `{escaped}\\_restore\\_%`.*"
    line = deployed.stderr.strip().splitlines()[-1]
    assert deployed.returncode == 1 and "Traceback" not in deployed.stderr, deployed.stderr
    assert grant in line and "nothing was migrated" in line and "pw-0" not in line, line
    assert written == [] and after == before
    if database == "mysql":  # a PostgreSQL restore needs no scratch database
        line = one_line_failure(restored, "db restore")
        assert grant in line and "nothing was restored" in line, line
    else:
        assert restored.returncode == 0, restored.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), combinations(("mysql", False)))
def test_a_mysql_restore_refuses_what_cannot_move_between_databases(
    project: Path, tmp_path: Path, database: str
) -> None:
    """MySQL's restore swaps tables in from a scratch database with one RENAME TABLE; views,
    triggers and routines cannot move that way. A database holding one is refused before
    anything changes, with the command that restores it by hand."""
    with scratch_database(database, tmp_path) as url:
        populated(project, url, users=50)
        made = db(project, "backup", "--output-dir", str(tmp_path / "b"), DATABASE_URL=url)
        assert made.returncode == 0, made.stderr
        backup = made.stdout.splitlines()[-1]
        sql(url, "CREATE VIEW recent_users AS SELECT id, email FROM users WHERE id > 40")
        sql(url, "DELETE FROM posts WHERE id > 25")
        before = fingerprint(url)

        done = db(project, "restore", backup, "--yes", DATABASE_URL=url)

        after = fingerprint(url)
        left = scratch_left(database, url)
    line = one_line_failure(done, "db restore")
    assert "holds view recent_users, which cannot move between databases" in line, line
    assert f"restore by hand with `mariadb {urlsplit(url).path.lstrip('/')} < " in line, line
    assert "nothing was restored" in line and after == before and left == []
