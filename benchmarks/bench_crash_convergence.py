"""How long the rendered suite's crash-convergence test takes for one new revision of five
statements (issue 11: quote it per database).

A generated project gets one revision after its baseline: a table, a column, a concurrent
index (db/online.py's helper), a second table with a foreign key, a row. Then, on the same
server, the time of `pytest tests/test_migrations.py::test_new_revisions_converge_after_a_crash`
(pytest start-up included) with that revision, and without it (the start-up and the scratch
database alone); their difference is what killing the migrator before each statement and
deploying again costs. Usage:

    uv run python benchmarks/bench_crash_convergence.py [--databases postgresql mysql sqlite]
        [--repeat 3]
"""

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path

from common import REPO, SERVERS, run, user_env

TEST = "tests/test_migrations.py::test_new_revisions_converge_after_a_crash"
REVISION = '''"""five statements"""

import sqlalchemy as sa
from alembic import op

from bench.db.online import create_index_concurrently, drop_index_concurrently

revision = "crash5"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # On PostgreSQL the concurrent build commits these first, and MySQL/MariaDB commit each
    # statement: safe to run again.
    op.create_table("crash_a", sa.Column("id", sa.Integer(), primary_key=True){guard})
    op.add_column("crash_a", sa.Column("note", sa.String(50)){guard})
    create_index_concurrently("ix_crash_a_note", "crash_a", ["note"])
    op.create_table(
        "crash_b",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("a_id", sa.Integer(), sa.ForeignKey("crash_a.id")){guard},
    )
    op.execute("INSERT INTO crash_a (id, note) VALUES (1, 'one')")


def downgrade() -> None:
    op.drop_table("crash_b")
    drop_index_concurrently("ix_crash_a_note", "crash_a")
    op.drop_table("crash_a")
'''


def build(database: str, root: Path, server: str | None) -> tuple[Path, str]:
    project = root / database
    env = user_env(**({"TEST_DATABASE_URL": server} if server else {}))
    args = [sys.executable, "-m", "copier", "copy", "--trust", "--defaults", "--vcs-ref=HEAD"]
    args += ["-d", "project_name=Bench", "-d", f"database={database}"]
    run([*args, str(REPO), str(project)], root, env)
    (initial,) = (project / "migrations" / "versions").glob("*.py")
    down = re.search(r'^revision: str = "(\w+)"', initial.read_text(), re.M).group(1)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('baseline = ""', f'baseline = "{down}"'))
    return project, down


def timed(project: Path, server: str | None) -> float:
    env = user_env(CI="true", **({"TEST_DATABASE_URL": server} if server else {}))
    return run(["uv", "run", "pytest", "-q", "-p", "no:cacheprovider", TEST], project, env)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", nargs="+", default=["postgresql", "mysql", "sqlite"])
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-crash-") as directory:
        for database in options.databases:
            server = SERVERS[database]
            project, down = build(database, Path(directory), server)
            timed(project, server)  # warm-up: bytecode, uv environment
            without = statistics.median(timed(project, server) for _ in range(options.repeat))
            revision = project / "migrations" / "versions" / "2099_01_01_0000-crash5.py"
            guard = ", if_not_exists=True" if database != "sqlite" else ""
            revision.write_text(REVISION.format(down=down, guard=guard))
            timed(project, server)
            crashed = statistics.median(timed(project, server) for _ in range(options.repeat))
            rows.append((database, without, crashed))
            print(f"{database}: {without:.2f}s without, {crashed:.2f}s with", file=sys.stderr)
    print(f"\nmedian of {options.repeat} runs\n")
    print(
        "| database | test, no new revision (s) | test, one 5-statement revision (s) | cost (s) |"
    )
    print("| --- | ---: | ---: | ---: |")
    for database, without, crashed in rows:
        print(f"| {database} | {without:.2f} | {crashed:.2f} | {crashed - without:.2f} |")


if __name__ == "__main__":
    main()
