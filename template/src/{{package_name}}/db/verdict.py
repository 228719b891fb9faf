"""What `db deploy` tells the operator when a migration fails: what happened, where the
database is now, and the one right next step. Restoring the backup is suggested only when
part of a revision stayed applied; a revision that rolled back whole needs fixing, not a
restore, which would throw away every row written since the backup.

Whether a failed revision rolled back whole depends on the database, told at run time by
the connection: PostgreSQL has transactional DDL, SQLite gets it from the migration session
(`migrations.transactional_ddl`), MySQL and MariaDB commit each DDL statement as it runs.
On those, `Watch` keeps a snapshot of the schema before the running revision, so the
verdict can say what part of it is applied.
"""

import re
import shlex
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import Script
from sqlalchemy import Connection
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from . import snapshots
from .connection import run_with_connection
from .migrations import copy_refused, lock_timed_out
from .status import CannotTell, describe, message, read_state


def rolls_back_whole(dialect: str) -> bool:
    """Does a failed revision roll back whole, its DDL included, on this database?"""
    return dialect != "mysql"


class Watch:
    """What a deploy keeps while it migrates: the revisions applied, and where DDL is not
    transactional, the schema before the revision that runs now. Alembic calls
    `on_version_apply` after each revision (migrations/env.py passes it on)."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self.applied: list[str] = []
        self.transactional = True
        self.schema: snapshots.Snapshot | None = None
        run_with_connection(url, self.look)

    def look(self, connection: Connection) -> None:
        self.transactional = rolls_back_whole(connection.dialect.name)
        if not self.transactional:
            self.schema = snapshots.take(connection)

    def on_version_apply(self, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        self.applied.append(step.up_revision_id)
        self.look(ctx.connection)

    def left_applied(self) -> list[str]:
        """What the failed revision changed that stayed: `table later`, `column users.nick
        removed`, ... Empty where DDL rolls back."""
        if self.schema is None:
            return []
        now = run_with_connection(self.url, snapshots.take)
        added = {(kind, name) for kind, name, _ in now - self.schema}
        removed = {(kind, name) for kind, name, _ in self.schema - now}
        changed = added & removed
        lines = [f"{kind} {name} changed" for kind, name in sorted(changed)]
        lines += [f"{kind} {name} added" for kind, name in sorted(added - changed)]
        lines += [f"{kind} {name} removed" for kind, name in sorted(removed - changed)]
        return lines


# MySQL errors that say a statement's work is done already: table, column, index, foreign
# key exists; column or index to drop does not.
ALREADY_DONE = {1050, 1060, 1061, 1826, 1091}


def found_done(error: BaseException) -> bool:
    """Did the statement fail because its work was there already?"""
    code = getattr(getattr(error, "orig", None), "args", (None,))[0]
    return isinstance(error, DBAPIError) and code in ALREADY_DONE


def restore_command(backup: Path) -> str:
    return f"uv run db restore {shlex.quote(str(backup))} --yes"


def deploy_failed(
    reason: str, error: BaseException, config: Config, watch: Watch | None, backup: Path | None
) -> str:
    """One line: which revision failed and why, where the database is, what to do."""
    if advice := copy_refused(error):
        reason = f"{reason} ({advice})"
    try:
        now = read_state(config)
    except CannotTell as cannot:
        next_step = (
            f"check it with `uv run db check`; the backup taken first: {backup}"
            if backup
            else "check it with `uv run db check`"
        )
        return f"failed: {reason}; where the database is cannot be told ({cannot}); {next_step}"
    where = f"the database is at {describe(now.current)}"
    failed: Script | None = now.pending[0] if now.pending else None
    what = (
        f"revision {failed.revision} ({message(failed)}) failed: {reason}"
        if failed
        else f"failed: {reason}"
    )
    if watch is None:  # it failed before Alembic started
        return f"failed before migrating: {reason}; {where}; nothing changed"
    if failed is None:  # another migrator, waiting behind this one, finished the work
        return f"failed: {reason}; {where}, the head, all the same: nothing to do"
    if watch.transactional:
        if isinstance(error, DBAPIError) and lock_timed_out(error):
            return (
                f"{what}; it was rolled back whole: {where}; nothing to restore: deploy again "
                "once the app's long transactions on its tables are over, or raise "
                "MIGRATION_LOCK_TIMEOUT / MIGRATION_LOCK_RETRIES"
            )
        kept = ""
        if (
            failed is not None
            and failed.path
            and re.search(r"autocommit_block|concurrently", Path(failed.path).read_text())
        ):
            kept = ", except what it ran outside its transaction (autocommit_block), which stays"
        return (
            f"{what}; it was rolled back whole{kept}: {where}; nothing to restore: fix the "
            "revision and deploy again"
        )
    left = watch.left_applied()
    if isinstance(error, DBAPIError) and lock_timed_out(error):
        stayed = f"; what stayed applied ({', '.join(left)}) runs again harmlessly" if left else ""
        return (
            f"{what}{stayed}: {where}; deploy again once the app's long transactions on its "
            "tables are over, or raise MIGRATION_LOCK_TIMEOUT / MIGRATION_LOCK_RETRIES"
        )
    if not left and found_done(error):
        return (
            f"{what}; that work is in the database already, left by an earlier run of this "
            "revision that was killed or failed (MySQL/MariaDB commit each DDL statement): "
            f"{where}; compare the schema with the revision, undo that part by hand (or "
            "restore a backup taken before that run), then deploy again"
        )
    if not left:
        return (
            f"{what}; none of its changes stayed: {where}; nothing to restore: fix the "
            "revision and deploy again"
        )
    undo = (
        f"undo them by hand, or restore the backup taken first with: {restore_command(backup)}"
        if backup
        else "undo them by hand (no backup was taken: --no-backup)"
    )
    return (
        f"{what}; part of it stayed applied (MySQL/MariaDB commit each DDL statement): {where}, "
        f"plus {', '.join(left)}; {undo}; then fix the revision and deploy again"
    )
