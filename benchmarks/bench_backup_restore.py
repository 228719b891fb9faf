"""How long a generated project's backup + restore takes against plain pg_dump + pg_restore.

A PostgreSQL (sync) project is generated, its database migrated, and a table of 1M rows
(`generate_series`, with a primary key) added. Then, interleaved, `--repeat` times each:

- the db command: `uv run db backup` + `uv run db restore FILE --yes`
  (uv, Python start-up and settings included);
- plain: `pg_dump -Fc -f FILE DB` + `pg_restore --clean --if-exists -d DB FILE`, the least
  an operator types for the same round trip.

The goal (issue 4): the db command's median at most 1.1x the plain median. Usage:

    uv run python benchmarks/bench_backup_restore.py [--rows 1000000] [--repeat 3]
"""

import argparse
import os
import secrets
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from common import REPO, SERVERS, fail, run, user_env

SERVER = SERVERS["postgresql"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for tool in ("uv", "psql", "pg_dump", "pg_restore"):
        if shutil.which(tool) is None:
            fail(f"{tool} is not on PATH")

    base_env = user_env()
    name = f"bench_backup_{secrets.token_hex(4)}"
    parts = urlsplit(SERVER)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    admin = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    with tempfile.TemporaryDirectory(prefix="bench_backup_") as directory:
        root = Path(directory)
        project = root / "project"
        print("bench_backup_restore: generating a postgresql project", file=sys.stderr)
        copy = ["uv", "run", "copier", "copy", "--trust", "--defaults", "--vcs-ref=HEAD"]
        copy += ["-d", "project_name=Bench Service", "-d", "database=postgresql"]
        run([*copy, str(REPO), str(project)], REPO, {**base_env, "TEST_DATABASE_URL": SERVER})
        run([*admin, SERVER, "-c", f'CREATE DATABASE "{name}"'], root, base_env)
        try:
            env = {**base_env, "DATABASE_URL": url}
            run(["uv", "run", "alembic", "upgrade", "head"], project, env)
            fill = (
                "CREATE TABLE bench AS SELECT g AS id, md5(g::text) AS name, g * 1.5 AS amount, "
                f"now() - g * interval '1 second' AS at FROM generate_series(1, {args.rows}) g; "
                "ALTER TABLE bench ADD PRIMARY KEY (id)"
            )
            run([*admin, url, "-c", fill, "-c", "VACUUM ANALYZE bench"], root, base_env)
            print(f"bench_backup_restore: {args.rows} rows in {name}", file=sys.stderr)
            samples: dict[str, list[float]] = {"db": [], "plain": []}
            sizes: dict[str, int] = {}
            libpq = {
                **base_env,
                "PGHOST": parts.hostname or "localhost",
                "PGPORT": str(parts.port or 5432),
                "PGUSER": parts.username or "postgres",
            }
            for index in range(args.repeat):
                out = root / f"backups{index}"
                backup, stdout = run(
                    ["uv", "run", "db", "backup", "--output-dir", str(out)], project, env
                )
                file = stdout.splitlines()[-1]
                restore, _ = run(["uv", "run", "db", "restore", file, "--yes"], project, env)
                samples["db"].append(backup + restore)
                sizes["db"] = Path(file).stat().st_size

                plain_file = root / f"plain{index}.dump"
                dump, _ = run(["pg_dump", "-Fc", "-f", str(plain_file), name], root, libpq)
                restore, _ = run(
                    ["pg_restore", "--clean", "--if-exists", "-d", name, str(plain_file)],
                    root,
                    libpq,
                )
                samples["plain"].append(dump + restore)
                sizes["plain"] = plain_file.stat().st_size
                print(
                    f"bench_backup_restore: repeat {index + 1}: db "
                    f"{samples['db'][-1]:.2f} s, plain {samples['plain'][-1]:.2f} s",
                    file=sys.stderr,
                )
        finally:
            run(
                [*admin, SERVER, "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
                root,
                base_env,
            )

    print(f"{args.rows} rows, {args.repeat} repeats, {os.cpu_count()} CPUs")
    print(f"{'':28} {'median':>8} {'min':>8} {'max':>8} {'file MB':>8}")
    for label, key in (
        ("db backup + db restore", "db"),
        ("pg_dump -Fc + pg_restore", "plain"),
    ):
        values = samples[key]
        print(
            f"{label:28} {statistics.median(values):8.2f} {min(values):8.2f} "
            f"{max(values):8.2f} {sizes[key] / 1e6:8.1f}"
        )
    ratio = statistics.median(samples["db"]) / statistics.median(samples["plain"])
    print(f"ratio of medians: {ratio:.2f}x (goal: at most 1.10x)")


if __name__ == "__main__":
    main()
