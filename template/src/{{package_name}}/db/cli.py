"""The `db` command: the project's database operations, for people and for deploy pipelines.

    uv run db check [--json]            is the database at head? (0 yes, 1 pending, 2 cannot tell)
    uv run db deploy [--no-backup]      back up (and check it, before rows are dropped), migrate
                                        to head under the lock, verify
    uv run db deploy --phase expand     the same, up to the first contract revision (before a
    uv run db deploy --phase contract   rollout), then the rest (after it): db/phases.py
    uv run db backup [--keep N]         a private, timestamped backup; its path is printed last
    uv run db restore FILE [--yes]      make the database hold what a backup holds, or fail whole
    uv run db roles [--apply]           least-privilege roles: print their SQL, or run it
    uv run db bootstrap                 finish a fresh project (what `copier copy` ran)

Each reads MIGRATIONS_DATABASE_URL, or else DATABASE_URL (environment or .env), through the
project's settings. A failure is
one line on stderr, `db <command>: <what happened and what to do>`, never a traceback.
"""

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script
from alembic.util import CommandError
from rich.console import Console
from sqlalchemy import Connection
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from ..core.config import SettingsError, get_settings
from . import ROOT, backups, destructive, phases
from .lock import LockNotAcquired, autocommit
from .status import CannotTell, MigrationState, describe, first_line, message, read_state
from .verdict import Watch, deploy_failed

UP_TO_DATE, PENDING, CANNOT_TELL = 0, 1, 2  # db check
DONE, FAILED = 0, 1  # the other commands; db deploy also exits 2 when it cannot tell

app = typer.Typer(
    name="db",
    help="The project's database: check, deploy, back up, restore, roles, bootstrap.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True, highlight=False)


def say(name: str, text: str) -> None:
    """A line on stderr for people: stdout holds only what machines read."""
    print(f"db {name}: {text}", file=sys.stderr, flush=True)


def fail(name: str, text: str, status: int = FAILED) -> typer.Exit:
    say(name, text)
    return typer.Exit(status)


@contextmanager
def progress(name: str, doing: str) -> Iterator[backups.Progress]:
    """Progress lines on stderr; in a terminal, also a spinner that shows the latest."""
    if not stderr.is_terminal:
        yield lambda line: say(name, line)
        return
    with stderr.status(doing) as status:

        def report(line: str) -> None:
            say(name, line)
            status.update(f"{doing}: {line}")

        yield report


def alembic_config() -> Config:
    return Config(ROOT / "alembic.ini")


def database_url(name: str) -> URL:
    try:
        return get_settings().migrations_url
    except SettingsError as error:
        raise fail(name, str(error)) from None


def where(url: URL) -> str:
    """The database, for messages: host:port/name or the SQLite file, never the password."""
    try:
        return backups.where(url)
    except backups.BackupError:  # e.g. an in-memory SQLite database
        return url.render_as_string(hide_password=True)


# ---------------------------------------------------------------- db check


@app.command()
def check(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False,
) -> None:
    """Is the database at head? Compare its revision with migrations/versions/.

    It changes nothing. Exit status: 0 at head, 1 migrations pending (each listed), 2 cannot
    tell (the database is unreachable, the settings are invalid, it holds a revision these
    files do not know, or the files have several heads).
    """
    try:
        state = read_state(alembic_config())
    except (CannotTell, CommandError) as error:
        if as_json:
            print(json.dumps({"status": "cannot_tell", "error": str(error)}))
        raise fail("check", f"cannot tell: {error}", CANNOT_TELL) from None
    if as_json:
        status = "pending" if state.pending else "up_to_date"
        print(json.dumps({"status": status, **state.to_json()}))
    elif not state.pending:
        print(f"up to date: the database is at head {state.head}")
    else:
        count = len(state.pending)
        print(
            f"{count} migration{'s' if count > 1 else ''} pending: the database is at "
            f"{describe(state.current)}, head is {state.head}"
        )
        for revision in state.pending:
            print(f"  {revision.revision}  {message(revision)}")
    raise typer.Exit(PENDING if state.pending else UP_TO_DATE)


# ---------------------------------------------------------------- db deploy


class Phase(StrEnum):
    expand = "expand"
    contract = "contract"


def planned(state: MigrationState, phase: Phase | None) -> list[Script]:
    """The pending revisions a deploy of `phase` runs: with expand, those before the first
    contract revision; otherwise all of them."""
    return phases.expand_part(state.pending) if phase is Phase.expand else state.pending


def write_sql(state: MigrationState, plan: list[Script], output: Path | None) -> None:
    """`alembic upgrade <current>:<target> --sql`: the statements a deploy would run."""
    if not plan:
        say("deploy", f"no revision to run: no SQL to write ({describe(state.current)})")
        return
    start = state.current[0] if state.current else None
    target = f"{start}:{plan[-1].revision}" if start else plan[-1].revision
    if output is None:
        command.upgrade(alembic_config(), target, sql=True)
        return
    with output.open("w") as buffer:
        command.upgrade(Config(ROOT / "alembic.ini", output_buffer=buffer), target, sql=True)
    say("deploy", f"wrote the SQL of {len(plan)} pending migration(s) to {output}")


@app.command()
def deploy(
    no_backup: Annotated[
        bool, typer.Option("--no-backup", help="skip the backup (development only)")
    ] = False,
    sql: Annotated[
        bool, typer.Option("--sql", help="print the SQL of the pending migrations instead")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", metavar="FILE", help="with --sql: write it here")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="a JSON summary on stdout")] = False,
    phase: Annotated[
        Phase | None,
        typer.Option(
            "--phase",
            help="expand: only the revisions before the first contract one (before rolling "
            "out the new release); contract: the rest (after it)",
        ),
    ] = None,
) -> None:
    """Under the migration lock: back up, migrate to head, verify.

    With --phase expand it stops before the first revision that says `phase = "contract"`,
    so that the release still running keeps working; --phase contract, run once the new
    release has replaced it, runs the rest (db/phases.py).

    Before a revision that drops or renames (or carries `allow_destructive`), the backup is
    restored into a scratch database and must hold the rows of the tables at risk. Another
    migrator running at the same time is waited for, and its work is not done
    twice, nor backed up again. Exit status: 0 migrated (or nothing to do), 1 the backup,
    the upgrade or the verification failed (the last line says what happened and what to
    do), 2 cannot tell where the database is (nothing was done). It never downgrades.
    """
    summary: dict[str, object] = {"status": "cannot_tell"}
    try:
        before = read_state(alembic_config())
    except (CannotTell, CommandError) as error:
        emit(as_json, {**summary, "error": str(error)})
        raise fail("deploy", f"cannot tell where the database is: {error}", CANNOT_TELL) from None
    summary = {"from": list(before.current), "head": before.head}
    if phase is not None:
        summary["phase"] = phase.value
    try:
        plan = planned(before, phase)
    except ValueError as error:  # a revision's phase is misspelt
        emit(as_json, {**summary, "status": "failed", "error": str(error)})
        raise fail("deploy", f"{error}; nothing was migrated") from None
    if sql:
        write_sql(before, plan, output)
        raise typer.Exit(DONE)
    if not before.pending:
        say("deploy", f"the database is at head {before.head}: nothing to do")
        emit(as_json, {**summary, "status": "up_to_date"})
        raise typer.Exit(DONE)
    if not plan:
        say(
            "deploy",
            f"the next revision, {before.pending[0].revision}, is a contract revision: nothing "
            "to do before the rollout (after it: db deploy --phase contract)",
        )
        emit(as_json, {**summary, "status": "up_to_date"})
        raise typer.Exit(DONE)
    destination = plan[-1].revision
    target = where(database_url("deploy"))
    count = len(plan)
    say("deploy", f"{count} migration(s) pending on {target}, from {describe(before.current)}:")
    for revision in plan:
        say("deploy", f"  {revision.revision}  {message(revision)}")
    if len(plan) < len(before.pending):
        waiting = len(before.pending) - len(plan)
        say("deploy", f"{waiting} contract revision(s) wait for: db deploy --phase contract")
    backup, watch = None, None
    destroying, at_risk = destructive.at_risk(plan)
    for each in destroying:
        tables = ", ".join(sorted(each.tables)) if each.tables else "any table"
        say("deploy", f"{each.revision.revision} drops or renames ({tables})")
    if destroying and no_backup:
        say("deploy", "--no-backup: no backup, so none is checked before rows are dropped")

    def back_up_first(connection: Connection) -> bool:
        """Called by migrations/env.py once it holds the migration lock: back up, unless a
        deploy that ran meanwhile brought the database to head (then do nothing). Under the
        lock, concurrent deploys take one backup between them."""
        nonlocal backup
        with autocommit(connection):
            if MigrationContext.configure(connection).get_current_heads() == (destination,):
                return False
            watch.look(connection)  # the schema as this deploy starts on it, under the lock
        if not no_backup:
            # Before a revision drops rows, the backup must be shown to restore them.
            verify = (True if at_risk is None else at_risk) if destroying else False
            with progress("deploy", "backing up") as report:
                backup = backups.back_up(
                    database_url("deploy"),
                    ROOT / "backups",
                    report,
                    verify=verify,
                    lock_timeout=get_settings().migration_lock_timeout,
                )
        return True

    try:
        watch = Watch(database_url("deploy"))
        start = time.monotonic()
        config = alembic_config()
        config.attributes["destination"] = destination
        config.attributes["before_migrating"] = back_up_first
        config.attributes["on_version_apply"] = [watch.on_version_apply]
        command.upgrade(config, destination)
        after = read_state(alembic_config())
        if after.current != (destination,):
            raise CommandError(f"the database is not at {destination} afterwards")
    except backups.BackupError as error:
        emit(as_json, {**summary, "status": "failed", "error": str(error)})
        raise fail("deploy", f"the backup failed: {error}; nothing was migrated") from None
    except LockNotAcquired as error:
        text = f"{error}; nothing was migrated"
        emit(as_json, {**summary, "status": "failed", "error": text, "backup": str(backup)})
        raise fail("deploy", text) from None
    except (CommandError, CannotTell, SQLAlchemyError, OSError) as error:
        text = deploy_failed(first_line(error), error, alembic_config(), watch, backup)
        emit(as_json, {**summary, "status": "failed", "error": text, "backup": str(backup)})
        raise fail("deploy", text) from None
    except Exception as error:  # a revision's own Python error: a verdict all the same
        reason = f"{type(error).__name__}: {first_line(error)}"
        text = deploy_failed(reason, error, alembic_config(), watch, backup)
        emit(as_json, {**summary, "status": "failed", "error": text, "backup": str(backup)})
        raise fail("deploy", text) from None
    if not watch.applied:
        say("deploy", f"another migrator brought the database to {destination}: nothing to do")
        emit(as_json, {**summary, "status": "up_to_date"})
        raise typer.Exit(DONE)
    say(
        "deploy",
        f"done: {describe(before.current)} -> {describe(after.current)} in "
        f"{time.monotonic() - start:.1f}s; backup: {backup or 'none (--no-backup)'}",
    )
    emit(as_json, {**summary, "status": "migrated", "to": list(after.current), "backup": backup})


def emit(as_json: bool, summary: dict[str, object]) -> None:
    if as_json:
        print(json.dumps(summary, default=str))


# ---------------------------------------------------------------- db backup, db restore


@app.command()
def backup(
    output_dir: Annotated[
        Path, typer.Option("--output-dir", help="where to write it (created 0700)")
    ] = ROOT / "backups",
    keep: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="then keep only the newest N backups there"),
    ] = None,
) -> None:
    """Back up the database into a private, timestamped file.

    The database is the one DATABASE_URL names; the app may keep running. The file's path
    is the last line of stdout."""
    url = database_url("backup")
    try:
        with progress("backup", "backing up") as report:
            path = backups.back_up(url, output_dir.resolve(), report, keep)
    except backups.BackupError as error:
        raise fail("backup", str(error)) from None
    except KeyboardInterrupt:
        raise fail("backup", "interrupted; no backup written") from None
    print(path)


@app.command()
def restore(
    file: Annotated[Path, typer.Argument(help="a backup written by `db backup`")],
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
    lock_timeout: Annotated[
        float,
        typer.Option(
            min=0.1, metavar="SECONDS", help="give up when the app's locks last longer than this"
        ),
    ] = 30.0,
) -> None:
    """Restore a backup into the database: afterwards it holds what the backup holds.

    The database is the one DATABASE_URL names. Tables created since the backup are dropped.
    The backup is checked whole before anything changes, and the restore happens whole or
    not at all; it holds the migration lock meanwhile. Asks first, unless --yes."""
    url = database_url("restore")
    path = file.resolve()
    try:
        backups.check(url, path)
        target = backups.where(url)
        if not yes:
            if not sys.stdin.isatty():
                refusal = f"restoring replaces data in {target}: pass --yes to confirm"
                raise backups.BackupError(refusal)
            if not typer.confirm(f"Replace the data in {target} with {path.name}?"):
                raise fail("restore", "nothing restored")
        with progress("restore", "restoring") as report:
            revision = backups.restore(url, path, report, lock_timeout)
    except backups.BackupError as error:
        raise fail("restore", str(error)) from None
    print(f"restored {path.name} into {target}: the database is at revision {revision}")


# ---------------------------------------------------------------- db roles


@app.command()
def roles(
    apply: Annotated[
        bool, typer.Option("--apply", help="run it as the URL's user, an administrator")
    ] = False,
    owner: Annotated[str | None, typer.Option(help="default: <database>_owner")] = None,
    migrator: Annotated[str | None, typer.Option(help="default: <database>_migrator")] = None,
    app_role: Annotated[str | None, typer.Option("--app", help="default: <database>_app")] = None,
    statement_timeout: Annotated[
        str, typer.Option(help="how long the app's statements may run")
    ] = "30s",
    idle_timeout: Annotated[
        str, typer.Option(help="how long the app may sit idle in a transaction (PostgreSQL)")
    ] = "60s",
) -> None:
    """Least-privilege roles: an owner of the schema, a migrator, an app that may only read
    and write rows (docs: how-to/topology.md).

    Prints the SQL for the database that MIGRATIONS_DATABASE_URL (or DATABASE_URL) names,
    with placeholders for the passwords; --apply runs it as that URL's user, an
    administrator, with the passwords from DB_MIGRATOR_PASSWORD and DB_APP_PASSWORD
    (environment or .env). Safe to run again."""
    from ..core.config import seconds
    from . import roles as setup

    url = database_url("roles")
    try:
        named = setup.Roles.named_after(
            url.database or "",
            statement_timeout=seconds(statement_timeout),
            idle_timeout=seconds(idle_timeout),
        )
        named = replace(
            named,
            owner=owner or named.owner,
            migrator=migrator or named.migrator,
            app=app_role or named.app,
        )
        if not apply:
            print(setup.script(named, url), end="")
            return
        for line in setup.apply(named, url):
            say("roles", line)
    except (setup.RolesError, ValueError) as error:
        raise fail("roles", str(error)) from None
    except SQLAlchemyError as error:
        raise fail("roles", f"{where(url)} refused: {first_line(error)}") from None
    say(
        "roles",
        f"set up on {where(url)}: point MIGRATIONS_DATABASE_URL at the migrator and "
        "DATABASE_URL at the app",
    )


# ---------------------------------------------------------------- db bootstrap


@app.command()
def bootstrap() -> None:
    """Finish setting up a freshly generated project (what `copier copy` ran).

    It writes .env, the initial revision and its proof on a scratch database, and the first
    git commit. Each step is skipped when its result is there: safe to run again."""
    # Imported here: the bootstrap needs the models (and SQLModel), which the other commands,
    # like every upgrade (decision 0010), do without; their start-up is shorter for it.
    from .bootstrap import BootstrapError, bootstrap_project

    try:
        bootstrap_project()
    except SQLAlchemyError as error:
        raise fail("bootstrap", f"the database refused: {first_line(error)}") from None
    except (BootstrapError, CommandError, OSError, ValueError) as error:
        raise fail("bootstrap", str(error)) from None
