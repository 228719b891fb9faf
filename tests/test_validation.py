"""Invalid answers are refused with the validator's one-line message."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

CASES = [
    ({"project_name": "  "}, "project_name is required"),
    ({"project_slug": "1-service"}, 'project_slug "1-service" must start with a letter'),
    ({"project_slug": "My_Service"}, 'project_slug "My_Service" must start with a letter'),
    ({"package_name": "my-service"}, 'package_name "my-service" must be a lowercase Python'),
    ({"package_name": "9lives"}, 'package_name "9lives" must be a lowercase Python'),
    ({"package_name": "class"}, 'package_name "class" is a Python keyword'),
    ({"package_name": "alembic"}, 'package_name "alembic" would shadow the module "alembic"'),
    ({"package_name": "sqlmodel"}, 'package_name "sqlmodel" would shadow the module'),
    ({"package_name": "test"}, 'package_name "test" would shadow the module'),
    ({"package_name": "json"}, 'package_name "json" would shadow the module'),
    ({"author_email": "not-an-address"}, 'author_email "not-an-address" is not an e-mail'),
    ({"author_email": "a@b"}, 'author_email "a@b" is not an e-mail'),
    ({"database": "oracle"}, "'oracle' is not in ['sqlite', 'postgresql', 'mysql']"),
    ({"python_version": "3.10"}, "'3.10' is not in ['3.11', '3.12', '3.13']"),
]


@pytest.mark.parametrize(("answers", "message"), CASES, ids=lambda v: str(v))
def test_invalid_answer_is_refused(tmp_path: Path, answers: dict, message: str) -> None:
    data = {"project_name": "Demo Service", **answers}
    args = [arg for key, value in data.items() for arg in ("-d", f"{key}={value}")]

    done = subprocess.run(
        [sys.executable, "-m", "copier", "copy", "--defaults", "--skip-tasks", "--vcs-ref=HEAD"]
        + args
        + [str(REPO), str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )

    assert done.returncode != 0
    last_line = done.stderr.strip().splitlines()[-1]
    assert message in last_line, done.stderr
    assert not (tmp_path / "out" / "pyproject.toml").exists()
