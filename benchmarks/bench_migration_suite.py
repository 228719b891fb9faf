"""How long the rendered migration suite takes against a plain upgrade + downgrade cycle.

For each history size N, a generated project gets N extra revisions (tables, columns,
indexes, foreign keys, in turn) and matching models. Then, on the same server:

- raw cycle: `uv run alembic upgrade head` + `uv run alembic downgrade base` on a fresh
  database, the least any migration test has to do;
- suite: `uv run pytest -m migrations` (every migration test, pytest start-up included).

The goal (issues 3 and 12): the suite grows linearly with N and, at N = 200, takes at most
2x the raw cycle on PostgreSQL, MariaDB and SQLite. Column and constraint changes are
written in batch mode, as the project's autogenerate writes them for SQLite (a plain ALTER
elsewhere), so that one history runs on every database; on MySQL/MariaDB the foreign-key
step is written as autogenerate writes it there (guarded, with db/online.py's helpers,
which MariaDB's in-place rule needs). The table also gives what each
revision added since the previous size costs, in milliseconds: constant when the growth is
linear.

With `--parts`, a second table splits the walk (db/checks.py's `walk_history`, the bulk of
the suite) on a fresh database each time: its three passes and `alembic check` alone; the
same with a catalog snapshot after each step of the first two passes, as the walk takes
them; and the whole walk (snapshots, rows, fingerprints). Taking the walk's checks out of
the suite's time gives the suite's floor, what it would take with no check inside the
walk at all. Usage:

    uv run python benchmarks/bench_migration_suite.py [--database postgresql]
        [--sizes 10 50 200 400] [--repeat 3] [--parts]
"""

import argparse
import json
import re
import secrets
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from common import REPO, SERVERS, admin, run, user_env


def revision_source(index: int, down: str | None, database: str) -> tuple[str, str]:
    """The revision id and file text of the index-th benchmark revision."""
    rev = f"bench{index:04d}"
    table, step = f"bench_{index // 4}", index % 4
    previous = f"bench_{max(index // 4 - 1, 0)}"
    if step == 0:
        up = (
            f'op.create_table("{table}", sa.Column("id", sa.Integer(), nullable=False), '
            f'sa.Column("name", sa.String(50), nullable=False), '
            f'sa.PrimaryKeyConstraint("id", name="pk_{table}"))'
        )
        down_ops = f'op.drop_table("{table}")'
    elif step == 1:  # batch mode, as the project writes it for SQLite (elsewhere plain ALTER)
        up = (
            f'with op.batch_alter_table("{table}") as batch_op:\n'
            f'        batch_op.add_column(sa.Column("note", sa.String(100), nullable=True))'
        )
        down_ops = (
            f'with op.batch_alter_table("{table}") as batch_op:\n'
            f'        batch_op.drop_column("note")'
        )
    elif step == 2:
        up = f'op.create_index("ix_{table}_note", "{table}", ["note"])'
        down_ops = f'op.drop_index("ix_{table}_note", table_name="{table}")'
    elif database == "mysql":  # as autogenerate writes it there: safe to run again
        fk = f"fk_{table}_parent_id_{previous}"
        up = (
            f'op.add_column("{table}", sa.Column("parent_id", sa.Integer(), nullable=True), '
            f"if_not_exists=True)\n"
            f'    create_foreign_key_if_not_exists("{fk}", "{table}", "{previous}", '
            f'["parent_id"], ["id"])'
        )
        down_ops = (
            f'drop_foreign_key_if_exists("{fk}", "{table}")\n'
            f'    op.drop_column("{table}", "parent_id", if_exists=True)'
        )
    else:
        fk = f"fk_{table}_parent_id_{previous}"
        up = (
            f'with op.batch_alter_table("{table}") as batch_op:\n'
            f'        batch_op.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))\n'
            f'        batch_op.create_foreign_key("{fk}", "{previous}", ["parent_id"], ["id"])'
        )
        down_ops = (
            f'with op.batch_alter_table("{table}") as batch_op:\n'
            f'        batch_op.drop_constraint("{fk}", type_="foreignkey")\n'
            f'        batch_op.drop_column("parent_id")'
        )
    helpers = (
        "from bench.db.online import create_foreign_key_if_not_exists, drop_foreign_key_if_exists\n"
        if database == "mysql"
        else ""
    )
    text = (
        f'"""benchmark step {index}"""\n\nimport sqlalchemy as sa\nfrom alembic import op\n'
        f"{helpers}\n"
        f'revision = "{rev}"\ndown_revision = {down!r}\nbranch_labels = None\n'
        f"depends_on = None\n\n\ndef upgrade() -> None:\n    {up}\n\n\n"
        f"def downgrade() -> None:\n    {down_ops}\n"
    )
    return rev, text


def models_source(size: int) -> str:
    """Core tables matching the final state of `size` benchmark revisions."""
    lines = ['"""Benchmark tables."""', "", "import sqlalchemy as sa"]
    lines += ["from sqlmodel import SQLModel", ""]
    for number in range((size + 3) // 4):
        steps = min(size - number * 4, 4)
        previous = f"bench_{max(number - 1, 0)}"
        columns = [
            'sa.Column("id", sa.Integer(), primary_key=True)',
            'sa.Column("name", sa.String(50), nullable=False)',
        ]
        if steps > 1:
            columns.append(f'sa.Column("note", sa.String(100), index={steps > 2})')
        if steps > 3:
            columns.append(f'sa.Column("parent_id", sa.Integer(), sa.ForeignKey("{previous}.id"))')
        lines.append(f'sa.Table("bench_{number}", SQLModel.metadata, {", ".join(columns)})')
    return "\n".join(lines) + "\n"


def build(database: str, size: int, root: Path, server: str | None) -> Path:
    project = root / f"{database}-{size}"
    env = project_env(server)
    args = [sys.executable, "-m", "copier", "copy", "--trust", "--defaults", "--vcs-ref=HEAD"]
    args += ["-d", "project_name=Bench", "-d", f"database={database}"]
    run([*args, str(REPO), str(project)], root, env)
    versions = project / "migrations" / "versions"
    (initial,) = versions.glob("*.py")
    down = re.search(r'^revision: str = "(\w+)"', initial.read_text(), re.M).group(1)
    for index in range(size):
        down, text = revision_source(index, down, database)
        (versions / f"2099_01_01_{index:04d}-{down}.py").write_text(text)
    package = project / "src" / "bench"
    (package / "models" / "bench.py").write_text(models_source(size))
    init = package / "models" / "__init__.py"
    registration = "\nfrom . import bench  # noqa: F401\n\nmetadata = "
    init.write_text(init.read_text().replace("\nmetadata = ", registration))
    pyproject = project / "pyproject.toml"
    # All benchmark revisions count as shipped: the lints look at new revisions only.
    pyproject.write_text(pyproject.read_text().replace('baseline = ""', f'baseline = "{down}"'))
    return project


def project_env(server: str | None, **extra: str) -> dict[str, str]:
    return user_env(**({"TEST_DATABASE_URL": server} if server else {}), **extra)


def scratch_url(
    database: str, server: str | None, directory: Path
) -> tuple[str, list[str], list[str]]:
    """A fresh database URL and the commands that create and drop it."""
    name = f"bench_{secrets.token_hex(4)}"
    if database == "sqlite":
        return f"sqlite:///{directory / (name + '.db')}", [], []
    if database == "postgresql":
        base = server.rsplit("/", 1)[0]
        return f"{base}/{name}", [f'CREATE DATABASE "{name}"'], [f'DROP DATABASE "{name}"']
    url = server.rstrip("/") + f"/{name}"
    return url, [f"CREATE DATABASE `{name}`"], [f"DROP DATABASE `{name}`"]


def raw_cycle(project: Path, database: str, server: str | None) -> float:
    with tempfile.TemporaryDirectory() as directory:
        url, create, drop = scratch_url(database, server, Path(directory))
        admin(database, create)
        try:
            env = project_env(server, DATABASE_URL=url)
            up, _ = run(["uv", "run", "alembic", "upgrade", "head"], project, env)
            down, _ = run(["uv", "run", "alembic", "downgrade", "base"], project, env)
        finally:
            admin(database, drop)
    return up + down


def suite(project: Path, server: str | None) -> float:
    env = project_env(server, CI="true")
    args = ["uv", "run", "pytest", "-q", "-p", "no:cacheprovider", "-m", "migrations"]
    return run(args, project, env)[0]


# Run with the project's Python: the walk's parts, in seconds, as one JSON line.
PARTS = """
import json, time
from alembic import command
from bench.db import checks, snapshots
from bench.db.connection import run_with_connection
from bench.db.scratch import configured_test_server, scratch_database

server = configured_test_server()  # TEST_DATABASE_URL, as the suite reads it


def passes(url, snapshot):
    def take(ctx, **_):
        snapshots.take(ctx.connection)

    def walk(connection):
        hooks = [take] if snapshot else []
        for migrate, destination, hooked in (
            (command.upgrade, "heads", hooks),
            (command.downgrade, "base", hooks),
            (command.upgrade, "heads", []),
        ):
            migrate(checks.alembic_config(connection, on_version_apply=hooked), destination)
        command.check(checks.alembic_config(connection))

    run_with_connection(url, walk)


def timed(work):
    with scratch_database(server, prefix="bench_parts") as url:
        start = time.perf_counter()
        work(url)
        return time.perf_counter() - start


print(json.dumps({
    "passes": timed(lambda url: passes(url, snapshot=False)),
    "snapshots": timed(lambda url: passes(url, snapshot=True)),
    "walk": timed(checks.walk_history),
}))
"""


def walk_parts(project: Path, server: str | None) -> dict[str, float]:
    _, out = run(["uv", "run", "python", "-c", PARTS], project, project_env(server))
    return json.loads(out.splitlines()[-1])


def print_parts(database: str, repeat: int, rows: list[tuple[int, float, float, dict]]) -> None:
    print(f"\n{database}, the walk's parts, median of {repeat} runs (s; x: of the raw cycle)\n")
    print(
        "| N | walk: passes alone | passes + snapshots | whole walk | suite without the "
        "walk's checks | suite with snapshots as its only check |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, raw, full, parts in rows:
        floor = full - parts["walk"] + parts["passes"]
        snapshots_only = full - parts["walk"] + parts["snapshots"]
        print(
            f"| {size} | {parts['passes']:.2f} | {parts['snapshots']:.2f} | {parts['walk']:.2f} "
            f"| {floor:.2f} ({floor / raw:.2f}x) | {snapshots_only:.2f} "
            f"({snapshots_only / raw:.2f}x) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=sorted(SERVERS), default="postgresql")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 200, 400])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--parts", action="store_true", help="also time the walk's parts")
    options = parser.parse_args()
    server = SERVERS[options.database]
    rows, parted = [], []
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as directory:
        for size in options.sizes:
            project = build(options.database, size, Path(directory), server)
            suite(project, server)  # warm-up: bytecode, uv environment
            raws = [raw_cycle(project, options.database, server) for _ in range(options.repeat)]
            suites = [suite(project, server) for _ in range(options.repeat)]
            raw, full = statistics.median(raws), statistics.median(suites)
            rows.append((size, raw, full, full / raw))
            print(f"N={size}: raw {raw:.2f}s, suite {full:.2f}s", file=sys.stderr)
            if options.parts:
                samples = [walk_parts(project, server) for _ in range(options.repeat)]
                parts = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
                parted.append((size, raw, full, parts))
            shutil.rmtree(project)
    print(f"\n{options.database}, median of {options.repeat} runs\n")
    print(
        "| revisions N | raw upgrade+downgrade (s) | migration suite (s) | suite / raw "
        "| raw, per added revision (ms) | suite, per added revision (ms) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    previous = None
    for size, raw, full, ratio in rows:
        added = ["", ""]
        if previous is not None and size > previous[0]:
            count = size - previous[0]
            added = [f"{(raw - previous[1]) / count * 1000:.1f}"]
            added.append(f"{(full - previous[2]) / count * 1000:.1f}")
        print(f"| {size} | {raw:.2f} | {full:.2f} | {ratio:.2f}x | {added[0]} | {added[1]} |")
        previous = (size, raw, full)
    if parted:
        print_parts(options.database, options.repeat, parted)


if __name__ == "__main__":
    main()
