"""Post-generation hook, run by Copier (`_tasks`) after `copier copy`, never on update.

It stays thin: it checks for the tools and hands over to the project's own
`uv run db bootstrap`, which writes `.env`, writes and proves the initial revision, and makes
the first commit. A failure prints one line that says what to do.

`copier recopy` runs it too (Copier treats a recopy as a copy). A project whose answers
file is already committed is not new: the hook then leaves it alone.
"""

import os
import shutil
import subprocess
import sys

# Copier deletes a new project whose task failed, unless `copier copy` had --no-cleanup.
RERUN = (
    "then run `copier copy` again (or keep the files with `copier copy --no-cleanup` and run "
    "`uv run db bootstrap` in the project)"
)


def fail(message: str) -> None:
    print(f"\ncopier-fastapi-sqlmodel: {message}", file=sys.stderr)
    sys.exit(1)


def already_generated(answers_file: str) -> bool:
    """True on `copier recopy`: the project's git history already holds its answers."""
    if shutil.which("git") is None:
        return False
    probe = ["git", "rev-parse", "--verify", "--quiet", f"HEAD:./{answers_file}"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def main() -> None:
    answers_file = sys.argv[1] if len(sys.argv) > 1 else ".copier-answers.yml"
    if already_generated(answers_file):
        print(
            f"copier-fastapi-sqlmodel: {answers_file} is already committed, so this is a recopy: "
            "the hook leaves the project alone (review the changes with `git diff`)."
        )
        return
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
        (["uv", "run", "--quiet", "db", "bootstrap"], "the project's bootstrap failed"),
    )
    for command, failure in steps:
        if subprocess.run(command, env=env).returncode != 0:
            fail(f"{failure} (see above); fix the cause, {RERUN}.")


if __name__ == "__main__":
    main()
