"""Invalid answers are refused with the validator's one-line message."""

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, answer_args, render

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
    ({"project_name": "x" * 41}, "project_name is 41 characters long: use at most 40"),
    ({"project_name": "Two\nlines"}, "project_name must be one line of printable characters"),
    ({"project_name": "{{ name }}"}, "project_name must not contain template syntax"),
    ({"project_name": "日本語"}, "project_slug is required: the project name has no Latin"),
    ({"package_name": "p" * 33}, "package_name is 33 characters long: use at most 32"),
    ({"description": "d" * 201}, "description is 201 characters long: use at most 200"),
    ({"description": "First\nSecond"}, "description must be one line of printable characters"),
    ({"description": "tab\there"}, "description must be one line of printable characters"),
    ({"author_name": " "}, "author_name is required"),
    ({"author_name": "Doe, Jane"}, 'author_name must not contain ",", "<", ">" or "@"'),
    ({"author_email": "a{b}@example.com"}, "is not an e-mail address"),
    ({"database": "oracle"}, "'oracle' is not in ['sqlite', 'postgresql', 'mysql']"),
    ({"python_version": "3.10"}, "'3.10' is not in ['3.11', '3.12', '3.13']"),
]


@pytest.mark.parametrize(("answers", "message"), CASES, ids=lambda v: str(v))
def test_invalid_answer_is_refused(tmp_path: Path, answers: dict, message: str) -> None:
    """Copier's own API, as the CLI calls it: one line, and nothing written."""
    with pytest.raises(ValueError) as refused:
        render(tmp_path / "out", **answers)

    assert message in str(refused.value)
    assert len(str(refused.value).splitlines()) == 1
    assert not (tmp_path / "out" / "pyproject.toml").exists()


def test_on_the_command_line_the_refusal_is_the_last_line(tmp_path: Path) -> None:
    """What a user sees: Copier's traceback ends with the validator's one line."""
    args = answer_args(project_name="x" * 41)

    done = subprocess.run(
        [sys.executable, "-m", "copier", "copy", "--defaults", "--skip-tasks", "--vcs-ref=HEAD"]
        + args
        + [str(REPO), str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )

    assert done.returncode != 0
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line == (
        "ValueError: Validation error for question 'project_name': project_name is 41 "
        "characters long: use at most 40 (the title of the API and README)"
    ), done.stderr
    assert not (tmp_path / "out" / "pyproject.toml").exists()
