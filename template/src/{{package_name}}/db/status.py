"""Where the database stands against the revision files: what `db check` and `db deploy`
report."""

import warnings
from dataclasses import dataclass

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import ResolutionError, RevisionError
from sqlalchemy import Connection
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from ..core.config import SettingsError, get_settings
from .connection import run_with_connection


class CannotTell(Exception):
    """The state cannot be known (exit status 2); the message is one line."""


@dataclass
class MigrationState:
    current: tuple[str, ...]  # the revisions in the database's version table
    head: str
    pending: list[Script]  # oldest first

    def to_json(self) -> dict[str, object]:
        return {
            "current": list(self.current),
            "head": self.head,
            "pending": [{"revision": s.revision, "message": message(s)} for s in self.pending],
        }


def message(revision: Script) -> str:
    return (revision.doc or "").strip().splitlines()[0] if revision.doc else ""


def describe(revisions: tuple[str, ...]) -> str:
    return ", ".join(revisions) if revisions else "base (no revision applied)"


def first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def database_url() -> URL:
    try:
        return get_settings().migrations_url
    except SettingsError as error:
        raise CannotTell(str(error)) from None


def read_current(url: URL) -> tuple[str, ...]:
    """The revisions in the database's version table (none for an empty database)."""

    def read(connection: Connection) -> tuple[str, ...]:
        return tuple(MigrationContext.configure(connection).get_current_heads())

    try:
        return run_with_connection(url, read)
    except (SQLAlchemyError, OSError) as error:
        where = url.render_as_string(hide_password=True)
        raise CannotTell(f"cannot reach the database at {where}: {first_line(error)}") from None


def revision_heads(script: ScriptDirectory) -> list[str]:
    """The heads of the revision files; CannotTell, with Alembic's reason, when a revision
    names a parent that does not exist or the files cannot be read."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return script.get_heads()
        except (RevisionError, KeyError) as error:  # Alembic warns why, then fails
            why = "; ".join(str(w.message) for w in caught) or first_line(error)
            raise CannotTell(f"the revision files cannot be read: {why}") from None


def read_state(config: Config, url: URL | None = None) -> MigrationState:
    """The database's revision, the head, and the revisions between them."""
    script = ScriptDirectory.from_config(config)
    heads = revision_heads(script)
    if len(heads) != 1:
        found = ", ".join(heads) if heads else "none"
        raise CannotTell(
            f"the revision files have {len(heads)} heads ({found}), expected one: "
            "merge them with `uv run alembic merge heads -m merge`"
        )
    current = read_current(url or database_url())
    for revision in current:
        try:
            script.get_revision(revision)
        except ResolutionError:
            raise CannotTell(
                f"the database is at revision {revision}, which these revision files do not "
                "know: it was migrated by other (newer?) code; nothing is changed"
            ) from None
    pending = list(script.iterate_revisions(heads, current))
    return MigrationState(current, heads[0], [s for s in reversed(pending) if s is not None])
