"""How the project's backfill (db/backfill.py) compares with the two ways the field guides
fill a column, on a large table that the app keeps writing to.

A generated project (PostgreSQL or MariaDB) gets a table `people` of N rows (1,000,000 by
default) with a `name`, which each strategy splits into `first_name` and `last_name`, as
the guides' example does, while four writers update single random rows (one transaction
each, as the app would) and time every statement:

- single: one set-based UPDATE in the migration's transaction;
- row loop: the guide's loop as written (SELECT every id and name, then one UPDATE per
  row, in one transaction), run on the first `--sample` rows and extrapolated to N;
- backfill: `backfill(...)` through Alembic's operations, as a revision calls it;
- single and backfill again without writers: what the backfill itself costs, apart from
  sharing the machine with writers that a single UPDATE keeps waiting.

The table is built again before each strategy. Reported: total time, and the writers'
p99 and worst wait (a single UPDATE makes some writers wait for all of it, which p99
hides). Goals (issue 13): the backfill within 1.1x the single UPDATE's time, with no
writer waiting more than 100 ms. The last line, per database:

    batched_vs_single=X max_stall_ms_batched=Y max_stall_ms_single=Z speedup_vs_row_loop=W

Each strategy runs `--repeat` times (3): the table gives the median run by total time,
and the worst wait over all runs. Usage:

    uv run python benchmarks/backfill.py [--database postgresql mysql] [--rows 1000000]
        [--sample 20000] [--repeat 3]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from common import REPO, SERVERS, admin, fail, run, user_env

INNER = Path(__file__).with_name("backfill_inner.py")  # runs in the generated project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", nargs="+", default=["postgresql", "mysql"])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as directory:
        for database in options.database:
            runs = measure(database, options.rows, options.sample, options.repeat, Path(directory))
            report(database, options.rows, options.sample, runs)


def measure(
    database: str, rows: int, sample: int, repeat: int, directory: Path
) -> list[dict[str, dict]]:
    """Each run's results, by strategy."""
    project = directory / database
    server = SERVERS[database]
    env = user_env(TEST_DATABASE_URL=server)
    args = ["copier", "copy", "--trust", "--defaults", "--vcs-ref=HEAD"]
    args += ["-d", "project_name=Bench", "-d", f"database={database}"]
    run([sys.executable, "-m", *args, str(REPO), str(project)], directory, env)
    name = "bench_backfill"
    url = f"{server.rsplit('/', 1)[0]}/{name}" if database == "postgresql" else f"{server}{name}"
    driver = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}[database]
    engine_url = driver + url[url.index("://") :]
    (project / INNER.name).write_text(INNER.read_text())
    quote = '"' if database == "postgresql" else "`"
    admin(database, [f"DROP DATABASE IF EXISTS {quote}{name}{quote}"])
    admin(database, [f"CREATE DATABASE {quote}{name}{quote}"])
    runs = []
    try:
        inner = ["uv", "run", "python", INNER.name, engine_url, str(rows), str(sample), "bench"]
        for _ in range(repeat):
            _, output = run(inner, project, user_env(DATABASE_URL=url))
            runs.append({r["strategy"]: r for r in map(json.loads, output.splitlines())})
    finally:
        admin(database, [f"DROP DATABASE IF EXISTS {quote}{name}{quote}"])
    return runs


def report(database: str, rows: int, sample: int, runs: list[dict[str, dict]]) -> None:
    """Per strategy: the median run by total time; the worst wait of all runs."""
    results = {}
    for label in runs[0]:
        found = sorted((each[label] for each in runs), key=lambda r: r["seconds"])
        results[label] = {
            **found[len(found) // 2],
            "max_ms": max(r["max_ms"] for r in found),
            "rows_left": max(r["rows_left"] for r in found),
        }
    print(f"\n{database}, {rows:,} rows, 4 single-row writers, median of {len(runs)} runs\n")
    print("| strategy | total (s) | writes | writers' p99 (ms) | writers' max (ms) | errors |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for label, found in results.items():
        total = f"{found['seconds']:.1f}"
        if found["extrapolated"]:
            total += f" (from {sample:,} rows)"
        errors = "; ".join(found["errors"]) or "none"
        print(
            f"| {label} | {total} | {found['writes']} | "
            + (f"{found['p99_ms']:.1f} | {found['max_ms']:.1f}" if found["writes"] else "- | -")
            + f" | {errors} |"
        )
        if found["rows_left"]:
            fail(f"{label} left {found['rows_left']} rows without a first_name")
    single, batched, loop = results["single"], results["backfill"], results["row loop"]
    print(
        f"\n{database}: batched_vs_single={batched['seconds'] / single['seconds']:.2f} "
        f"max_stall_ms_batched={batched['max_ms']:.0f} max_stall_ms_single={single['max_ms']:.0f} "
        f"speedup_vs_row_loop={loop['seconds'] / batched['seconds']:.1f}"
    )


if __name__ == "__main__":
    main()
