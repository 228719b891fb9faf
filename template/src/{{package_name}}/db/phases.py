"""Expand and contract: a schema change that the release still running and the new one
both serve through, in two phases around the rollout.

    uv run db deploy --phase expand     # every revision before the first contract one
    (roll out the new release; the old one stops serving)
    uv run db deploy --phase contract   # the rest

A revision is expand unless it says, at its top level, `phase = "contract"`. The old
release serves on what expand leaves, so an expand revision adds and never takes away: no
table or column dropped or renamed, no NOT NULL set on a column that exists, no column's
type changed. The new release serves before contract runs, so a contract revision takes
away and never adds a table, view or column. The migration suite checks every new revision
against the catalog snapshots the walk took around its upgrade (db/checks.py), whatever
wrote its DDL: `op` calls, helpers or plain SQL. A revision that must break its phase's
rule says why at its top level, `allow_phase = "<why>"`, and the test run lists it.
"""

from collections.abc import Iterable
from itertools import takewhile

from alembic.script import Script

PHASES = ("expand", "contract")
# Snapshot kinds (db/snapshots) of what code reads and writes by name: tables, views
# (PostgreSQL's relation kinds r, p, v, m, f) and their columns.
NAMED = {"table", "view", "column"} | {f"relation {kind}" for kind in "rpvmf"}


def phase(revision: Script) -> str:
    """The revision's `phase`: "expand" unless it says "contract". ValueError when it
    says something else."""
    value = getattr(revision.module, "phase", "expand")
    if value not in PHASES:
        raise ValueError(
            f'revision {revision.revision}: phase must be "expand" (the default) or "contract", '
            f"not {value!r}"
        )
    return value


def is_contract(revision: Script) -> bool:
    return phase(revision) == "contract"


def expand_part(revisions: Iterable[Script]) -> list[Script]:
    """The revisions, oldest first, up to the first contract one: what runs before the
    rollout."""
    return list(takewhile(lambda revision: not is_contract(revision), revisions))


def accepted(revision: Script) -> str | None:
    """`allow_phase = "<why>"`: the reason the revision breaks its phase's rule."""
    reason = getattr(revision.module, "allow_phase", None)
    return reason if isinstance(reason, str) and reason.strip() else None


def named(keys: Iterable[tuple[str, str]]) -> list[str]:
    """The tables, views and columns among snapshot keys, as "table users" or "column
    users.age"; a table's columns go without saying."""
    found = sorted(key for key in keys if key[0] in NAMED)
    tables = {name for kind, name in found if kind != "column"}
    return [
        f"{kind} {name}"
        for kind, name in found
        if kind != "column" or name.partition(".")[0] not in tables
    ]


def out_of_phase(
    revision: Script, before: Iterable[tuple[str, str, str]], after: Iterable[tuple[str, str, str]]
) -> list[str]:
    """What the revision's upgrade did, from the catalog snapshots before and after it,
    that its phase does not allow; one sentence each, with the fix."""
    old = {(kind, name): definition for kind, name, definition in before}
    new = {(kind, name): definition for kind, name, definition in after}
    if is_contract(revision):
        created = named(new.keys() - old.keys())
        if not created:
            return []
        return [
            f"creates {', '.join(created)}, but contract revisions run after the new release "
            "is rolled out, which then serves without it: create it in an expand revision "
            "(without phase)"
        ]
    found = []
    if removed := named(old.keys() - new.keys()):
        found.append(
            f"removes {', '.join(removed)}, which the release still running reads (a rename "
            'removes the old name too): do it in a revision with phase = "contract", once '
            "no release uses it"
        )
    not_null = sorted(
        name
        for kind, name in new.keys() - old.keys()
        if kind == "not null" and ("column", name) in old
    )
    if not_null:
        found.append(
            f"sets NOT NULL on {', '.join(not_null)}, which the release still running may "
            "leave empty: fill the column and add a CHECK (column IS NOT NULL) NOT VALID here, "
            'and set NOT NULL in a revision with phase = "contract"'
        )
    retyped = sorted(
        f"{name} ({old[kind, name]} to {new[kind, name]})"
        for kind, name in old.keys() & new.keys()
        if kind == "column" and old[kind, name] != new[kind, name]
    )
    if retyped:
        found.append(
            f"changes the type of {', '.join(retyped)} under the release still running: add a "
            "column of the new type here, write both and backfill, and drop the old one in a "
            'revision with phase = "contract"'
        )
    return found
