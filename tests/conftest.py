"""The template's test fixtures: the servers, and the generated projects tests share.

Plain helpers live in plain modules that tests import: `helpers` (render, run),
`databases` (the servers, SQL, scratch databases), `projects` (the shared projects).
"""

import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from databases import HOW_TO_RUN, SERVERS, server_reachable
from projects import shared_project


@pytest.fixture(scope="session")
def server_url() -> Callable[[str], str | None]:
    """TEST_DATABASE_URL for a database: None for SQLite; skip (or, under CI, fail) if the
    server does not answer."""

    def for_database(database: str) -> str | None:
        if database == "sqlite":
            return None
        url = SERVERS[database]
        if not server_reachable(url):
            message = f"{database} server at {urlsplit(url).netloc} does not answer: {HOW_TO_RUN}"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        return url

    return for_database


@pytest.fixture(scope="session")
def shared(
    tmp_path_factory: pytest.TempPathFactory, server_url: Callable[[str], str | None]
) -> Callable[[str, bool], Path]:
    """The combination's generated project (tests/projects.py), as the hook left it."""
    root = tmp_path_factory.getbasetemp() / "shared"
    return lambda database, async_mode: shared_project(
        root, database, async_mode, server_url(database)
    )
