"""Copier migration for a release that renames or moves a file: carry the project's own
version of the file, with its edits, over to the new name.

Copier runs it after an update (`_migrations`, stage `after`), in the project:

    _migrations:
      - version: "1.2.0"  # the release that moves the file
        command: ["{{ _copier_python }}", "{{ _copier_conf.src_path }}/hooks/move_file.py",
                  "--answers-file={{ _copier_conf.answers_file }}", "old/path", "new/path"]

Without it, `copier update` writes the new path from the new release and deletes the old
one, edits and all: the project's changes to the file silently leave the working tree.

For each OLD NEW pair, comparing the project's OLD at HEAD (ours) with the previous
release's OLD (base, rendered again with the project's previous answers) and the new
release's NEW (theirs, which Copier has just written):

- no OLD at HEAD, but the previous release had one: it was deleted on purpose, so NEW is
  removed as well;
- OLD unchanged since the previous release: nothing to do, NEW is the release's;
- OLD edited: NEW becomes the three-way merge of ours, base and theirs. Where both sides
  changed the same lines, NEW holds conflict markers, as `copier update --conflict inline`
  writes them, and this script says so.

Changes are left unstaged, like the rest of the update, for review before the commit.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from copier import run_copy

LABELS = ("before updating", "last update", "after updating")  # as Copier labels them


def say(message: str) -> None:
    print(f"move_file: {message}", flush=True)


def at_head(path: str) -> bytes | None:
    """The file as committed in the project (paths relative to the current directory)."""
    done = subprocess.run(["git", "show", f"HEAD:./{path}"], capture_output=True)
    return done.stdout if done.returncode == 0 else None


def render_previous_release(answers_file: str, into: Path) -> None:
    """Render the release the project was on before this update, with its answers then."""
    committed = at_head(answers_file)
    if committed is None:
        sys.exit(f"move_file: {answers_file} is not committed: cannot tell the previous release")
    answers = yaml.safe_load(committed)
    run_copy(
        answers["_src_path"],
        into,
        data={key: value for key, value in answers.items() if not key.startswith("_")},
        vcs_ref=answers["_commit"],
        defaults=True,
        overwrite=True,
        skip_tasks=True,
        unsafe=True,
        quiet=True,
    )


def move(old: str, new: str, previous: Path) -> None:
    ours, base_file, theirs_file = at_head(old), previous / old, Path(new)
    base = base_file.read_bytes() if base_file.is_file() else None
    if ours is None:
        if base is not None and at_head(new) is None and theirs_file.exists():
            theirs_file.unlink()
            say(f"{old} was deleted in this project: not adding {new}, its new name")
        return
    if base is None:
        say(f"{old} is the project's own (the previous release had no such file): left alone")
        return
    if ours == base:
        return  # Copier's update already did the right thing
    if not theirs_file.exists():
        theirs_file.parent.mkdir(parents=True, exist_ok=True)
        theirs_file.write_bytes(ours)
        say(f"carried {old} over to {new}")
    else:
        with tempfile.NamedTemporaryFile(prefix="theirs_") as theirs:
            theirs.write(theirs_file.read_bytes())
            theirs.flush()
            theirs_file.write_bytes(ours)
            merge = ["git", "merge-file", *(f"-L{label}" for label in LABELS)]
            done = subprocess.run([*merge, new, str(base_file), theirs.name])
        if done.returncode < 0:
            sys.exit(f"move_file: `git merge-file` failed on {new}")
        if done.returncode > 0:
            say(f"carried {old} over to {new} with conflicts: resolve the markers in {new}")
        else:
            say(f"carried {old} over to {new}, with your changes and the release's")
    Path(old).unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers-file", default=".copier-answers.yml")
    parser.add_argument("paths", nargs="+", metavar="OLD NEW", help="pairs of paths")
    args = parser.parse_args()
    if len(args.paths) % 2:
        parser.error("paths come in pairs: OLD NEW [OLD NEW ...]")
    pairs = list(zip(args.paths[::2], args.paths[1::2], strict=True))
    with tempfile.TemporaryDirectory(prefix="move_file_") as directory:
        previous = Path(directory) / "previous"
        render_previous_release(args.answers_file, previous)
        for old, new in pairs:
            move(old, new, previous)


if __name__ == "__main__":
    main()
