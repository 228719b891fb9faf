"""`db backup` and `db restore` in generated projects, on real databases.

Each test generates a project, points its DATABASE_URL at a database made for the test (a
user with a password full of special characters), fills it, backs it up, destroys tables
and rows, restores, and compares per-table row counts and checksums. Then the failures:
no confirmation, a bad file, an unreachable database, a malformed URL, a missing tool.
"""

import re
import secrets
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import quote

import pytest

from databases import scratch_database
from helpers import one_line_failure, project_env, run
from projects import combinations, package_of

# Run inside the project (its settings, its driver, sync or async): fill, destroy, checksums.
HELPER = """
import asyncio
import hashlib
import json
import sys
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import pool

from demo_service.core.config import get_settings
from demo_service.models import metadata

URL = get_settings().sqlalchemy_url
TEXTS = [
    "Zoë 🐍 ñ 漢字 ‽", "quote \\' double \\" back\\\\slash", "tab\\tnew\\nline\\r\\nend",
    "\\\\N is not null", "", "x" * 5000, "ctrl \\x01\\x7f", "%s %(x)s ; -- /* */",
]
extra = sa.MetaData()
blobs = sa.Table(
    "blobs", extra, sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("data", sa.LargeBinary(length=100_000)), sa.Column("note", sa.Text),
)


def fill(c):
    users, posts = metadata.tables["users"], metadata.tables["posts"]
    start = datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=UTC)
    c.execute(users.insert(), [
        {"email": f"user{i}@example.com", "full_name": None if i % 5 == 0 else TEXTS[i % 8][:255],
         "created_at": start + timedelta(seconds=i)} for i in range(1, 301)
    ])
    c.execute(posts.insert(), [
        {"author_id": 1 + i % 300, "title": f"title {i} {TEXTS[i % 8][:50]}",
         "body": TEXTS[(i + 3) % 8], "created_at": start + timedelta(minutes=i)}
        for i in range(900)
    ])
    extra.create_all(c)
    c.execute(blobs.insert(), [
        {"id": i, "data": None if i == 1 else bytes(range(256)) * i, "note": TEXTS[i % 8]}
        for i in range(1, 21)
    ])


def destroy(c):
    c.execute(sa.text("DELETE FROM users WHERE id % 2 = 0"))
    c.execute(sa.text("DELETE FROM alembic_version"))
    c.execute(sa.text("DROP TABLE posts"))
    c.execute(sa.text("DROP TABLE blobs"))


def checksums(c):
    result = {}
    for name in sorted(sa.inspect(c).get_table_names()):
        table = sa.Table(name, sa.MetaData(), autoload_with=c)
        rows = c.execute(sa.select(table).order_by(*table.columns)).all()
        digest = hashlib.md5(repr([tuple(row) for row in rows]).encode()).hexdigest()
        result[name] = [len(rows), digest]
    return result


def main(fn):
    if URL.get_dialect().is_async:
        from sqlalchemy.ext.asyncio import create_async_engine

        async def go():
            engine = create_async_engine(URL, poolclass=pool.NullPool)
            async with engine.begin() as c:
                result = await c.run_sync(fn)
            await engine.dispose()
            return result

        return asyncio.run(go())
    engine = sa.create_engine(URL, poolclass=pool.NullPool)
    with engine.begin() as c:
        result = fn(c)
    engine.dispose()
    return result


print(json.dumps(main(globals()[sys.argv[1]])))
"""

COMBINATIONS = combinations(
    ("sqlite", False), ("postgresql", False), ("mysql", False), ("postgresql", True)
)
EXTENSIONS = {"sqlite": "db", "postgresql": "dump", "mysql": "sql"}
TOOLS = {"postgresql": ("pg_dump", "pg_restore"), "mysql": ("mariadb-dump", "mariadb")}


@pytest.fixture
def test_database(tmp_path: Path) -> Iterator[Callable[[str], tuple[str, str]]]:
    """A database of the test's own, owned by a user with a password: (DATABASE_URL,
    password)."""
    with ExitStack() as stack:

        def make(database: str) -> tuple[str, str]:
            # Characters that need quoting in a URL, a .pgpass line and a MySQL option file.
            password = f"Pw{secrets.token_hex(6)}#:@;\"\\'x"
            if database == "sqlite":
                return f"sqlite:///{tmp_path / 'data' / 'app.db'}", password
            return stack.enter_context(scratch_database(database, tmp_path, password)), password

        yield make


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), COMBINATIONS)
def test_backup_destroy_restore_gives_back_every_row(
    tmp_path: Path,
    shared: Callable[[str, bool], Path],
    test_database: Callable[[str], tuple[str, str]],
    database: str,
    async_mode: bool,
) -> None:
    project = shared(database, async_mode)
    url, password = test_database(database)
    (tmp_path / "data").mkdir(exist_ok=True)
    env = project_env(DATABASE_URL=url)
    (project / "helper.py").write_text(HELPER.replace("demo_service", package_of(project)))
    outputs: list[str] = []

    def uv(*args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess[str]:
        done = run(["uv", "run", *args], project, {**env, **extra}, check=check)
        outputs.append(done.stdout + done.stderr)
        return done

    uv("alembic", "upgrade", "head")
    uv("python", "helper.py", "fill")
    before = uv("python", "helper.py", "checksums").stdout
    assert '"blobs": [20,' in before and '"posts": [900,' in before and '"users": [300,' in before

    # Backup: the path is the last line of stdout; the file is private and named right.
    out_dir = tmp_path / "backups"
    made = uv("db", "backup", "--output-dir", str(out_dir))
    backup = Path(made.stdout.splitlines()[-1])
    if database != "sqlite":  # progress, table by table, on stderr (SQLite: every 5 s)
        progress = r"^db backup: dumping table (public\.)?users$"
        assert re.search(progress, made.stderr, re.M), made.stderr
    assert backup.is_absolute() and backup.parent == out_dir and backup.is_file()
    assert backup.stat().st_mode & 0o777 == 0o600
    revision = next((project / "migrations" / "versions").glob("*.py")).name.split("-")[1][:12]
    server = "" if database == "sqlite" else r"@127\.0\.0\.1-\d+"  # <database>@<host>-<port>
    stamp = r"\d{8}T\d{6}\.\d{3}Z"
    pattern = rf"[a-z0-9_]+{server}-{stamp}-{revision}\.{EXTENSIONS[database]}"
    assert re.fullmatch(pattern, backup.name), backup.name

    uv("python", "helper.py", "destroy")
    assert uv("python", "helper.py", "checksums").stdout != before

    # No confirmation (stdin is not a terminal, no --yes): refused, nothing changed.
    refused = subprocess.run(
        ["uv", "run", "db", "restore", str(backup)],
        cwd=project,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    assert "--yes" in one_line_failure(refused, "db restore")
    outputs.append(refused.stdout + refused.stderr)

    restored = uv("db", "restore", str(backup), "--yes")
    assert f"at revision {revision}" in restored.stdout.splitlines()[-1], restored.stdout
    assert uv("python", "helper.py", "checksums").stdout == before

    # Retention: two more backups with --keep 2 leave the newest two.
    for _ in range(2):
        newest = uv("db", "backup", "--output-dir", str(out_dir), "--keep", "2")
    kept = sorted(p.name for p in out_dir.iterdir())
    assert len(kept) == 2 and Path(newest.stdout.splitlines()[-1]).name in kept, kept
    assert backup.name not in kept
    latest = out_dir / kept[-1]

    # Failures: one line each, no traceback.
    garbage = tmp_path / f"garbage.{EXTENSIONS[database]}"
    garbage.write_bytes(b"not a backup\n" * 10)
    assert "garbage" in one_line_failure(
        uv("db", "restore", str(garbage), "--yes", check=False), "db restore"
    )
    malformed = uv("db", "backup", check=False, DATABASE_URL="postgresql://u:pw@h:port/x")
    assert "invalid settings: DATABASE_URL" in one_line_failure(malformed, "db backup")

    if database == "sqlite":
        missing = f"sqlite:///{tmp_path / 'nowhere' / 'app.db'}"
        gone = uv("db", "backup", check=False, DATABASE_URL=missing)
        assert "no SQLite database" in one_line_failure(gone, "db backup")
    else:
        unreachable = re.sub(r":\d+/", ":1/", url)
        for command in ("backup", "restore"):
            args = ["db", command] + ([str(latest), "--yes"] if command == "restore" else [])
            done = uv(*args, check=False, DATABASE_URL=unreachable)
            line = one_line_failure(done, f"db {command}")
            assert "cannot connect to the database at" in line and ":1/" in line, line

        # No dump tool on PATH: the project's Python directly, since `uv` is not there either.
        empty = tmp_path / "empty-bin"
        empty.mkdir()
        db = str(project / ".venv" / "bin" / "db")
        for command, tool in zip(("backup", "restore"), TOOLS[database], strict=True):
            args = [db, command] + ([str(latest), "--yes"] if command == "restore" else [])
            done = run(args, project, {**env, "PATH": str(empty)}, check=False)
            outputs.append(done.stdout + done.stderr)
            line = one_line_failure(done, f"db {command}")
            assert f"{tool} is not installed: install" in line, line

    for output in outputs:
        assert password not in output and quote(password, safe="") not in output, output
