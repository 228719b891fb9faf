"""Post-generation hook, run by Copier (`_tasks`) after `copier copy`, never on update.

It stays thin: it checks for the tools and hands over to the project's own
`scripts/bootstrap.py`, which writes `.env`, autogenerates and proves the initial revision,
and makes the first commit. A failure prints one line that says what to do.
"""

import os
import shutil
import subprocess
import sys

# Copier deletes a new project whose task failed, unless `copier copy` had --no-cleanup.
RERUN = (
    "then run `copier copy` again (or keep the files with `copier copy --no-cleanup` and run "
    "`uv run scripts/bootstrap.py` in the project)"
)


def fail(message: str) -> None:
    print(f"\ncopier-fastapi-sqlmodel: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    for tool, where in (
        ("uv", "https://docs.astral.sh/uv/getting-started/installation/"),
        ("git", "your system's package manager"),
    ):
        if shutil.which(tool) is None:
            fail(f"{tool} is not installed: install it ({where}), {RERUN}.")
    # Copier may itself run inside another uv environment; the project uses its own.
    outer = ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
    env = {key: value for key, value in os.environ.items() if key not in outer}
    steps = (
        (["uv", "sync", "--quiet"], "creating the environment (`uv sync`) failed"),
        (["uv", "run", "--quiet", "scripts/bootstrap.py"], "the project's bootstrap failed"),
    )
    for command, failure in steps:
        if subprocess.run(command, env=env).returncode != 0:
            fail(f"{failure} (see above); fix the cause, {RERUN}.")


if __name__ == "__main__":
    main()
