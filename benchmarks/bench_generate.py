"""Time `copier copy` (post-copy hook included) and the rendered project's own test suite.

For each combination of database (sqlite, postgresql, mysql) and async_mode (sync, async),
every repeat renders the template's working tree (HEAD plus uncommitted changes, as the
template's tests do) into a fresh temporary directory, then runs `uv run pytest -q` in the
rendered project. The table reports the median, min and max wall time of each step.

    uv run python benchmarks/bench_generate.py                    # all six, 3 repeats
    uv run python benchmarks/bench_generate.py --repeat 5 --only sqlite-sync --markdown
    uv run python benchmarks/bench_generate.py --json samples.json

Server databases: TEST_DATABASE_URL is taken from TEMPLATE_TEST_POSTGRESQL_URL /
TEMPLATE_TEST_MYSQL_URL when set, as in the template's tests, otherwise from the local
defaults below. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
DATABASES = ("sqlite", "postgresql", "mysql")
MODES = ("sync", "async")
COMBINATIONS = [f"{database}-{mode}" for database in DATABASES for mode in MODES]
SERVERS = {
    "postgresql": os.environ.get(
        "TEMPLATE_TEST_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    ),
    "mysql": os.environ.get("TEMPLATE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/"),
}
COMMAND_TIMEOUT = 900  # seconds, per command
TAIL_LINES = 15
PASSED = re.compile(r"(\d+) passed")
SKIPPED = re.compile(r"(\d+) skipped")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BenchError(Exception):
    """A failure reported as one line (plus the tail of the command's output), no traceback."""


@dataclass
class Result:
    combination: str
    copy_seconds: list[float] = field(default_factory=list)
    suite_seconds: list[float] = field(default_factory=list)
    tests_passed: list[int] = field(default_factory=list)
    tests_skipped: list[int] = field(default_factory=list)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def project_env(test_server: str | None, **extra: str) -> dict[str, str]:
    """The environment for copier and the rendered project.

    The outer `uv run` exports VIRTUAL_ENV; the rendered project must use its own .venv.
    """
    drop = ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "TEST_DATABASE_URL")
    env = {key: value for key, value in os.environ.items() if key not in drop}
    if test_server:
        env["TEST_DATABASE_URL"] = test_server
    env.update(extra)
    return env


def tail(text: str, lines: int = TAIL_LINES) -> str:
    kept = [line for line in ANSI.sub("", text).splitlines() if line.strip()][-lines:]
    return "\n".join(f"    {line}" for line in kept) or "    (no output)"


def timed(args: list[str], cwd: Path, env: dict[str, str], combination: str) -> tuple[float, str]:
    """Run a command; return its wall time and combined output, or raise BenchError."""
    prefix = [sys.executable, "-m", "copier"]
    shown = shlex.join(["copier", *args[3:]] if args[:3] == prefix else args)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            args,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
    except FileNotFoundError as error:
        raise BenchError(f"`{shown}` for {combination}: {args[0]} not found ({error})") from None
    except subprocess.TimeoutExpired as error:
        output = error.output or ""
        if isinstance(output, bytes):
            output = output.decode(errors="replace")
        raise BenchError(
            f"`{shown}` for {combination} timed out after {COMMAND_TIMEOUT}s; "
            f"last output:\n{tail(output)}"
        ) from None
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(
            f"`{shown}` for {combination} exited {done.returncode}; "
            f"last output:\n{tail(done.stdout)}"
        )
    return elapsed, done.stdout


def copier_command() -> list[str]:
    """Prefer the copier of the running interpreter (the repo's dev environment)."""
    try:
        import copier  # noqa: F401
    except ImportError:
        found = shutil.which("copier")
        if found is None:
            raise BenchError(
                "copier is not installed: run this script with `uv run python "
                "benchmarks/bench_generate.py` from the repository root"
            ) from None
        return [found]
    return [sys.executable, "-m", "copier"]


def check_server(database: str) -> str | None:
    if database == "sqlite":
        return None
    url = SERVERS[database]
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=3):
            pass
    except OSError as error:
        variable = f"TEMPLATE_TEST_{database.upper()}_URL"
        raise BenchError(
            f"{database} server at {parts.hostname}:{parts.port} does not answer ({error}): "
            f"start it or point {variable} at one, or leave it out with --only"
        ) from None
    return url


def run_combination(
    combination: str, repeat: int, workdir: Path, copier: list[str], test_server: str | None
) -> Result:
    database, mode = combination.split("-")
    result = Result(combination)
    for index in range(1, repeat + 1):
        destination = Path(tempfile.mkdtemp(prefix=f"{combination}-{index}-", dir=workdir))
        project = destination / "demo-service"
        try:
            args = [*copier, "copy", "--trust", "--defaults", "--vcs-ref=HEAD"]
            for key, value in {
                "project_name": "Demo Service",
                "database": database,
                "async_mode": str(mode == "async").lower(),
            }.items():
                args += ["-d", f"{key}={value}"]
            args += [str(REPO), str(project)]
            copy_time, _ = timed(args, destination, project_env(test_server), combination)
            if not any((project / "migrations" / "versions").glob("*.py")):
                raise BenchError(
                    f"`copier copy` for {combination} succeeded but the post-copy hook wrote "
                    "no initial revision in migrations/versions (were tasks skipped?)"
                )

            suite_env = project_env(test_server, CI="true")
            suite_args = ["uv", "run", "pytest", "-q"]
            suite_time, output = timed(suite_args, project, suite_env, combination)
            last = output.strip().splitlines()[-1] if output.strip() else ""
            passed = PASSED.search(last)
            if passed is None:
                raise BenchError(
                    f"`uv run pytest -q` for {combination}: no 'N passed' in its last line {last!r}"
                )
            skipped = SKIPPED.search(last)
        finally:
            shutil.rmtree(destination, ignore_errors=True)

        result.copy_seconds.append(copy_time)
        result.suite_seconds.append(suite_time)
        result.tests_passed.append(int(passed.group(1)))
        result.tests_skipped.append(int(skipped.group(1)) if skipped else 0)
        log(
            f"[{combination} {index}/{repeat}] copy {copy_time:.1f}s, "
            f"suite {suite_time:.1f}s, {last}"
        )
    return result


HEADERS = [
    "combination",
    "copy median (s)",
    "copy min",
    "copy max",
    "suite median (s)",
    "suite min",
    "suite max",
    "tests passed",
]
NUMERIC = set(range(1, 7))


def row(result: Result) -> list[str]:
    def stats(samples: list[float]) -> list[str]:
        return [
            f"{value:.1f}" for value in (statistics.median(samples), min(samples), max(samples))
        ]

    passed = "/".join(str(n) for n in sorted(set(result.tests_passed)))
    skipped = max(result.tests_skipped)
    if skipped:
        passed += f" ({skipped} skipped)"
    return [
        result.combination,
        *stats(result.copy_seconds),
        *stats(result.suite_seconds),
        passed,
    ]


def render_markdown(rows: list[list[str]]) -> str:
    align = ["---:" if i in NUMERIC or i == len(HEADERS) - 1 else ":---" for i in range(8)]
    lines = [HEADERS, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def render_plain(rows: list[list[str]]) -> str:
    table = [HEADERS, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADERS))]
    out = []
    for cells in table:
        padded = [
            cell.rjust(widths[i]) if i > 0 else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        out.append("  ".join(padded).rstrip())
    out.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(out)


def machine() -> dict[str, object]:
    def output(args: list[str]) -> str | None:
        try:
            done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    return {
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "uv": output(["uv", "--version"]),
        # The copies render HEAD plus uncommitted changes, untracked files included.
        "template_commit": (output(["git", "rev-parse", "--short", "HEAD"]) or "?")
        + ("+uncommitted" if output(["git", "status", "--porcelain"]) else ""),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Median wall time of `copier copy` (hook included) and of the rendered "
        "project's `uv run pytest -q`, per database x async_mode."
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per combination (default 3)")
    parser.add_argument(
        "--only",
        action="append",
        choices=COMBINATIONS,
        metavar="COMBINATION",
        help=f"benchmark only this combination (repeatable): {', '.join(COMBINATIONS)}",
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write raw samples here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    selected = [c for c in COMBINATIONS if c in set(args.only or COMBINATIONS)]
    try:
        copier = copier_command()
        if shutil.which("uv") is None:
            raise BenchError("uv is not installed: https://docs.astral.sh/uv/")
        servers = {c: check_server(c.split("-")[0]) for c in selected}
        facts = machine()
        log(
            f"bench_generate: {', '.join(selected)} x {args.repeat} on {facts['nproc']} CPUs, "
            f"Python {facts['python']}, {facts['uv']}, template {facts['template_commit']}"
        )
        results = []
        with tempfile.TemporaryDirectory(prefix="bench-generate-") as workdir:
            for combination in selected:
                results.append(
                    run_combination(
                        combination, args.repeat, Path(workdir), copier, servers[combination]
                    )
                )
    except BenchError as error:
        print(f"bench_generate: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_generate: interrupted", file=sys.stderr)
        return 130

    rows = [row(result) for result in results]
    print(render_markdown(rows) if args.markdown else render_plain(rows))
    if args.json:
        payload = {
            "machine": facts,
            "repeat": args.repeat,
            "results": [
                {
                    "combination": r.combination,
                    "database": r.combination.split("-")[0],
                    "async_mode": r.combination.endswith("-async"),
                    "copy_seconds": r.copy_seconds,
                    "suite_seconds": r.suite_seconds,
                    "tests_passed": r.tests_passed,
                    "tests_skipped": r.tests_skipped,
                }
                for r in results
            ],
        }
        try:
            args.json.write_text(json.dumps(payload, indent=2) + "\n")
        except OSError as error:
            print(f"bench_generate: error: cannot write {args.json}: {error}", file=sys.stderr)
            return 1
        log(f"bench_generate: wrote raw samples to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
