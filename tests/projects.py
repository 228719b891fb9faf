"""Generated projects, shared by the test modules that use them: one per database and mode,
generated the first time a worker needs it, with the hook, as a user does.

Every test that uses a combination carries the combination's `xdist_group` mark, and the
suite runs with `--dist loadgroup`, so one worker runs all of a combination's tests one
after another: each combination is generated once per run. A test that changes the project
puts it back (`reset`) when it is done.
"""

import re
from pathlib import Path

import pytest
import yaml

from helpers import REPO, answer_args, project_env, run

MATRIX = [(d, a) for d in ("sqlite", "postgresql", "mysql") for a in (False, True)]
# Each combination gets other answer values: short and long names, unicode, quotes.
NAMES = {
    ("sqlite", False): ("Shop", "Orders and carts"),
    ("sqlite", True): ("Notes", 'Notes "to self" \\ scratch'),
    ("postgresql", False): ("Billing Service", "Invoices, refunds & credit notes"),
    ("postgresql", True): ("Café Ünïcode Søk", "Recherche plein texte — 日本語 too"),
    ("mysql", False): ('R&D "Ops" Tools', "It's the lab's"),
    ("mysql", True): ("Acme Corporation Inventory Reconciliatio", "x" * 200),
}


def group(database: str, async_mode: bool) -> str:
    return f"{database}-{'async' if async_mode else 'sync'}"


def combinations(*wanted: tuple[str, bool]) -> list[object]:
    """pytest params (database, async_mode) for `wanted` (default: all six), each in its
    combination's xdist group."""
    return [
        pytest.param(d, a, id=group(d, a), marks=pytest.mark.xdist_group(group(d, a)))
        for d, a in (wanted or MATRIX)
    ]


def generate(
    tmp_path: Path,
    database: str,
    async_mode: bool,
    test_server: str | None,
    **answers: str,
) -> Path:
    """`copier copy` with the hook, as a user runs it."""
    env = project_env(**({"TEST_DATABASE_URL": test_server} if test_server else {}))
    project = tmp_path / group(database, async_mode)
    args = ["copier", "copy", "--trust", "--defaults", "--vcs-ref=HEAD"]
    args += answer_args(database=database, async_mode=async_mode, **answers)
    done = run([*args, str(REPO), str(project)], cwd=tmp_path, env=env)
    assert "bootstrap: wrote the initial revision" in done.stdout
    return project


_shared: dict[tuple[str, bool], Path] = {}


def shared_project(root: Path, database: str, async_mode: bool, test_server: str | None) -> Path:
    """The combination's project, generated once in this worker with the combination's
    own names; put back as the hook left it."""
    key = (database, async_mode)
    if key not in _shared:
        name, description = NAMES[key]
        root.mkdir(parents=True, exist_ok=True)
        _shared[key] = generate(
            root, database, async_mode, test_server, project_name=name, description=description
        )
    reset(_shared[key])
    return _shared[key]


def reset(project: Path) -> None:
    """Undo a test's changes to the project's files (ignored files, .env and .venv, stay)."""
    run(["git", "checkout", "--", "."], project)
    run(["git", "clean", "-fdq"], project)


def package_of(project: Path) -> str:
    return yaml.safe_load((project / ".copier-answers.yml").read_text())["package_name"]


def initial_revision(project: Path) -> str:
    """The id of the revision the bootstrap wrote (the only one in a fresh project)."""
    (initial,) = (project / "migrations" / "versions").glob("*_initial_schema.py")
    return re.search(r'^revision: str = "(\w+)"', initial.read_text(), re.M).group(1)
