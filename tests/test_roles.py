"""`db roles`: least-privilege roles on PostgreSQL and MariaDB. The migrator keeps
migrating (and backing up), the app keeps reading and writing rows of every table, a later
revision's included, and may not change the schema."""

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import sqlalchemy as sa

from databases import SERVERS, scratch_database, sql
from helpers import project_env, run
from projects import combinations, reset

pytestmark = pytest.mark.slow

# Passwords with what breaks quoting: quotes, a backslash, %, a colon.
PASSWORDS = {"migrator": "mig'ra%tor:\\1", "app": 'a"p%p:2'}
NOTES = '''"""notes: a table added after the roles"""

import sqlalchemy as sa
from alembic import op

revision = "notes01"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("body", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("notes")
'''
# What each server says when the app may not change the schema.
DENIED = {
    "postgresql": (
        "must be owner of table",
        "permission denied for schema public",
        "permission denied for table",
    ),
    "mysql": ("command denied to user",),
}

SCHEMA_CHANGES = (
    "DROP TABLE notes",
    "DROP TABLE users",
    "ALTER TABLE users ADD COLUMN extra INTEGER",
    "ALTER TABLE notes ADD COLUMN extra INTEGER",
    "CREATE TABLE intruder (id INTEGER)",
)
# What the app may not do. On PostgreSQL it may not touch the migrations' bookkeeping
# either (MySQL's grants are the database's, for today's tables and later ones alike).
BOOKKEEPING = (
    "UPDATE alembic_version SET version_num = 'skipped'",
    "DELETE FROM migration_backfills",
)
FORBIDDEN = {"postgresql": SCHEMA_CHANGES + BOOKKEEPING, "mysql": SCHEMA_CHANGES}


def as_user(admin_url: str, user: str, password: str) -> str:
    parts = urlsplit(admin_url)
    netloc = f"{user}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def drop_roles(database: str, name: str) -> None:
    """After the database is gone: its roles (PostgreSQL's are the server's, not its)."""
    if database == "postgresql":
        sql(
            SERVERS[database],
            *(f"DROP ROLE IF EXISTS {name}_{r}" for r in ("app", "migrator", "owner")),
        )
    else:
        sql(
            SERVERS[database],
            *(f"DROP USER IF EXISTS '{name}_{r}'@'%'" for r in ("app", "migrator")),
        )


@pytest.mark.parametrize(
    ("database", "async_mode"),
    combinations(("postgresql", False), ("postgresql", True), ("mysql", False), ("mysql", True)),
)
def test_the_app_role_reads_and_writes_rows_and_nothing_more(
    shared: Callable[[str, bool], Path], tmp_path: Path, database: str, async_mode: bool
) -> None:
    """Tables made before the roles (as the administrator) and after them (by the migrator)
    both: the app inserts, reads, updates and deletes rows, and DROP, ALTER and CREATE
    TABLE fail; its timeouts are the role's. The passwords are never printed."""
    project = shared(database, async_mode)
    with ExitStack() as stack:
        stack.callback(reset, project)
        names = []  # the roles go once the database (and what it grants them) has gone
        stack.callback(lambda: names and drop_roles(database, names[0]))
        admin = stack.enter_context(scratch_database(database, tmp_path))
        name = urlsplit(admin).path.lstrip("/")
        names.append(name)
        run(["uv", "run", "alembic", "upgrade", "head"], project, project_env(DATABASE_URL=admin))
        secrets = {
            "DB_MIGRATOR_PASSWORD": PASSWORDS["migrator"],
            "DB_APP_PASSWORD": PASSWORDS["app"],
        }

        printed = run(["uv", "run", "db", "roles"], project, project_env(DATABASE_URL=admin))
        unset = run(
            ["uv", "run", "db", "roles", "--apply"],
            project,
            project_env(DATABASE_URL=admin),
            check=False,
        )
        applied = run(
            ["uv", "run", "db", "roles", "--apply"],
            project,
            project_env(DATABASE_URL=admin, **secrets),
        )
        again = run(  # safe to run again
            ["uv", "run", "db", "roles", "--apply"],
            project,
            project_env(DATABASE_URL=admin, **secrets),
        )

        migrator = as_user(admin, f"{name}_migrator", PASSWORDS["migrator"])
        app = as_user(admin, f"{name}_app", PASSWORDS["app"])
        (project / "migrations" / "versions" / "2099_01_01_0000-notes01_test.py").write_text(
            NOTES.format(down=head(project, admin))
        )
        deployed = run(
            ["uv", "run", "db", "deploy"],
            project,
            project_env(DATABASE_URL=app, MIGRATIONS_DATABASE_URL=migrator),
            check=False,
        )
        assert deployed.returncode == 0, deployed.stderr

        crud = sql(
            app,
            "INSERT INTO users (email, created_at) VALUES ('a@example.com', CURRENT_TIMESTAMP)",
            "UPDATE users SET full_name = 'A' WHERE email = 'a@example.com'",
            "INSERT INTO notes (body) VALUES ('written by the app')",
            "UPDATE notes SET body = 'changed by the app'",
            "SELECT (SELECT full_name FROM users), (SELECT body FROM notes)",
            "DELETE FROM notes",
            "DELETE FROM users",
        )
        refused, forbidden = {}, FORBIDDEN[database]
        for statement in forbidden:
            try:
                sql(app, statement)
            except sa.exc.DBAPIError as error:
                refused[statement] = str(error.orig)
        if database == "postgresql":
            timeouts = sql(
                app, "SHOW statement_timeout", "SHOW idle_in_transaction_session_timeout"
            )
            owners = sql(
                admin, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
            )
        else:
            timeouts = sql(app, "SELECT @@max_statement_time")
            owners = [[["-"]]]

    assert unset.returncode == 1 and "Traceback" not in unset.stderr, unset.stderr
    assert (
        unset.stderr.strip()
        .splitlines()[-1]
        .startswith("db roles: set DB_MIGRATOR_PASSWORD and DB_APP_PASSWORD")
    )
    output = printed.stdout + printed.stderr + applied.stdout + applied.stderr + again.stderr
    for password in PASSWORDS.values():
        assert password not in output
    assert f"{name}_migrator" in printed.stdout and f"{name}_app" in printed.stdout
    assert "roles: set up on" in applied.stderr and "roles: set up on" in again.stderr
    assert crud[4] == [["A", "changed by the app"]]
    assert len(refused) == len(forbidden), refused
    for statement, message in refused.items():
        assert any(m in message for m in DENIED[database]), (statement, message)
    if database == "postgresql":
        assert timeouts == [[["30s"]], [["1min"]]]
        assert owners == [[[f"{name}_owner"]]]
    else:
        assert float(timeouts[0][0][0]) == 30


def head(project: Path, url: str) -> str:
    return sql(url, "SELECT version_num FROM alembic_version")[0][0][0]


@pytest.mark.parametrize(("database", "async_mode"), combinations(("sqlite", False)))
def test_roles_on_sqlite_is_a_one_line_error(
    shared: Callable[[str, bool], Path], database: str, async_mode: bool
) -> None:
    """SQLite has no roles: one line says so."""
    project = shared(database, async_mode)
    done = run(["uv", "run", "db", "roles"], project, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "db roles: sqlite has no roles: the app and migrations share its file"
    )


@pytest.mark.parametrize(("database", "async_mode"), combinations(("postgresql", False)))
def test_role_names_postgresql_would_cut_short_are_a_one_line_error(
    shared: Callable[[str, bool], Path], database: str, async_mode: bool
) -> None:
    """PostgreSQL keeps 63 bytes of a name and drops the rest without an error: on a
    database named with 56 characters, `<database>_migrator` would be created as
    `..._migrat` while `db roles` reported `..._migrator`, whose login then fails. The
    names are refused before anything runs, and shorter ones given by option work."""
    project = shared(database, async_mode)
    url = f"postgresql://postgres@127.0.0.1:5432/svc_{'x' * 52}"
    default = run(["uv", "run", "db", "roles"], project, project_env(DATABASE_URL=url), check=False)
    named = run(
        ["uv", "run", "db", "roles", "--owner", "o1", "--migrator", "m1", "--app", "a1"],
        project,
        project_env(DATABASE_URL=url),
    )
    assert default.returncode == 1 and "Traceback" not in default.stderr, default.stderr
    assert default.stderr.strip().splitlines()[-1] == (
        f"db roles: the role name svc_{'x' * 52}_migrator is 65 bytes, and PostgreSQL keeps "
        "63: choose shorter names with --owner, --migrator and --app"
    )
    assert "GRANT o1 TO m1;" in named.stdout and "SET role = 'o1'" in named.stdout


@pytest.mark.parametrize(("database", "async_mode"), combinations(("postgresql", False)))
def test_roles_on_a_new_database_keep_the_app_out_of_the_bookkeeping(
    shared: Callable[[str, bool], Path], tmp_path: Path, database: str, async_mode: bool
) -> None:
    """Roles set up before the first deploy: the version table the migrator then fills, and
    the backfills' progress table, would have the app's rights by the default privileges;
    `db roles` makes them first, for the owner, so the app may not write (or read) them.
    The migrator deploys every revision, and the app reads and writes the tables. A restore
    recreates every table, and the default privileges give the app its rights again: not
    on the bookkeeping."""
    project = shared(database, async_mode)
    with ExitStack() as stack:
        stack.callback(reset, project)
        names = []
        stack.callback(lambda: names and drop_roles(database, names[0]))
        admin = stack.enter_context(scratch_database(database, tmp_path))
        name = urlsplit(admin).path.lstrip("/")
        names.append(name)
        secrets = {
            "DB_MIGRATOR_PASSWORD": PASSWORDS["migrator"],
            "DB_APP_PASSWORD": PASSWORDS["app"],
        }
        run(
            ["uv", "run", "db", "roles", "--apply"],
            project,
            project_env(DATABASE_URL=admin, **secrets),
        )
        migrator = as_user(admin, f"{name}_migrator", PASSWORDS["migrator"])
        app = as_user(admin, f"{name}_app", PASSWORDS["app"])
        deployed = run(
            ["uv", "run", "db", "deploy"],
            project,
            project_env(DATABASE_URL=app, MIGRATIONS_DATABASE_URL=migrator),
            check=False,
        )
        as_migrator = project_env(DATABASE_URL=app, MIGRATIONS_DATABASE_URL=migrator)
        made = run(
            ["uv", "run", "db", "backup", "--output-dir", str(tmp_path)], project, as_migrator
        )
        backup = made.stdout.splitlines()[-1]
        restored = run(["uv", "run", "db", "restore", backup, "--yes"], project, as_migrator)
        rows = sql(
            app,
            "INSERT INTO users (email, created_at) VALUES ('a@example.com', CURRENT_TIMESTAMP)",
            "SELECT count(*) FROM users",
        )
        refused = {}
        for statement in (*BOOKKEEPING, "SELECT version_num FROM alembic_version"):
            try:
                sql(app, statement)
            except sa.exc.DBAPIError as error:
                refused[statement] = str(error.orig)
        at = sql(admin, "SELECT version_num FROM alembic_version")

    assert deployed.returncode == 0, deployed.stderr
    assert "the database is at revision" in restored.stderr + restored.stdout
    assert rows[1] == [["1"]]
    assert len(at) == 1 and len(at[0]) == 1, at  # the migrator recorded the head
    assert len(refused) == 3, refused
    assert all("permission denied for table" in m for m in refused.values()), refused
