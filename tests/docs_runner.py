"""Run the commands of a Markdown page as a reader would: every ```bash block in order, in
one working directory that `cd` moves, so that a page whose commands stop working fails a
test.

A page steers its run with HTML comments just before a block (invisible on GitHub and in
the MkDocs site); what a comment does is spelled out where the page uses it:

    <!-- test: skip: <why> -->                       do not run the next block
    <!-- test: write <path> -->                      the next block is a file's content
    <!-- test: expect -->                            each line of the next block is in the
                                                     output of the last block run
    <!-- test: exits <status> -->                    the next block's last command ends with
                                                     this status (a merge that stops at a
                                                     conflict: 1); the block runs on after
                                                     a failing command
    <!-- test: answer <question>=<value> ... -->     the next block's one command asks
                                                     Copier's questions: answer these,
                                                     press Enter (the default) for the rest
    <!-- test: serve <url> -->                       a line of the next block that starts a
                                                     server runs in the background until
                                                     <url> answers, and stops at <!-- test:
                                                     stop -->
    <!-- test: run <command> -->                     a step that the prose describes (an
                                                     edit), as a command; runs in place
    <!-- test: pause <name> -->                      `run(..., until=<name>)` stops here,
                                                     `run(..., start=<name>)` starts here

Blocks under a content tab (`=== "PostgreSQL"`) run only when the runner is given that tab.
A test gives substitutions for what differs between a reader's machine and a test's: the
template's URL, names that must be unique on a shared server, a free port.
"""

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from helpers import REPO

DIRECTIVE = re.compile(r"^\s*<!-- test: (?P<verb>[\w-]+)(?::? ?(?P<argument>.*?))? -->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>[\w-]*)\s*$")
TAB = re.compile(r'^=== "(?P<label>[^"]+)"')
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T[\d:.]+Z?")


@dataclass
class Step:
    """A block of a page, or a directive that stands alone."""

    line: int
    verb: str  # "block", "run", "stop" or "pause"
    argument: str = ""
    language: str = ""
    code: str = ""
    tab: str | None = None
    directives: dict[str, str] = field(default_factory=dict)


def steps(page: Path) -> list[Step]:
    found: list[Step] = []
    pending: dict[str, str] = {}
    tab: str | None = None
    lines = page.read_text().splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if heading := TAB.match(line):
            tab = heading["label"]
        elif line and not line.startswith((" ", "\t")) and not DIRECTIVE.match(line):
            tab = None
        if directive := DIRECTIVE.match(line):
            verb, argument = directive["verb"], directive["argument"] or ""
            if verb in ("run", "stop", "pause"):
                found.append(Step(index + 1, verb, argument, tab=tab))
            else:
                pending[verb] = argument
        elif fence := FENCE.match(line):
            indent, body = fence["indent"], []
            index += 1
            while lines[index].strip() != "```":
                body.append(lines[index].removeprefix(indent))
                index += 1
            code = "\n".join(body) + "\n"
            in_tab = tab if indent else None
            found.append(Step(index + 1, "block", "", fence["language"], code, in_tab, pending))
            pending = {}
        index += 1
    return found


class Reader:
    """Follows pages from a starting directory, with the substitutions a test needs."""

    def __init__(
        self,
        cwd: Path,
        substitutions: dict[str, str] | None = None,
        tabs: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.cwd = cwd
        self.substitutions = substitutions or {}
        self.tabs = tabs
        self.env = env or dict(os.environ)
        self.output = ""  # what the last block printed on stdout
        self.errors = ""  # and on stderr
        self.server: subprocess.Popen | None = None
        self.done: dict[Path, int] = {}

    def substitute(self, text: str) -> str:
        for old, new in self.substitutions.items():
            text = text.replace(old, new)
        return text

    def run(self, page: Path, until: str | None = None, start: str | None = None) -> None:
        """Follow `page` from where the last call stopped (or from the pause `start`), to
        the pause `until` or the end."""
        if start is not None:
            pauses = [
                i for i, s in enumerate(steps(page)) if (s.verb, s.argument) == ("pause", start)
            ]
            assert pauses, f"{page.relative_to(REPO)} has no <!-- test: pause {start} -->"
            self.done[page] = pauses[0] + 1
        try:
            self._run(page, until)
        except BaseException:
            self.stop_server()  # a failed step leaves no server behind
            raise

    def _run(self, page: Path, until: str | None) -> None:
        all_steps = steps(page)
        start = self.done.get(page, 0)
        for number, step in enumerate(all_steps[start:], start + 1):
            self.done[page] = number
            if step.tab and step.tab not in self.tabs:
                continue
            where = f"{page.relative_to(REPO)}:{step.line}"
            if step.verb == "pause" and step.argument == until:
                return
            if step.verb == "run":
                self.shell(self.substitute(step.argument), where)
            elif step.verb == "stop":
                self.stop_server()
            elif step.verb == "block":
                self.block(step, where)
        assert until is None, f"{page.relative_to(REPO)} has no <!-- test: pause {until} -->"
        self.stop_server()

    def block(self, step: Step, where: str) -> None:
        code = self.substitute(step.code)
        if "skip" in step.directives:
            return
        if "write" in step.directives:
            path = self.cwd / self.substitute(step.directives["write"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(code)
        elif "expect" in step.directives:
            for line in filter(None, code.splitlines()):
                normal = TIMESTAMP.sub("<time>", line)
                assert normal in TIMESTAMP.sub("<time>", self.output), (
                    f"{where}: the page shows {line!r}, the commands printed:\n{self.output}"
                )
        elif step.language in ("bash", "sh", "shell"):
            if "answer" in step.directives:
                self.answer_questions(code, self.substitute(step.directives["answer"]), where)
            elif "serve" in step.directives:
                self.serve(code, self.substitute(step.directives["serve"]), where)
            else:
                self.shell(code, where, int(step.directives.get("exits") or 0))

    def shell(self, code: str, where: str, status: int = 0) -> None:
        state = self.cwd / ".." / f".reader-cwd-{os.getpid()}"
        stop_on_error = "set -eo pipefail" if status == 0 else "set -o pipefail"
        script = f"trap 'pwd > {state.resolve()}' EXIT\n{stop_on_error}\n{code}"
        done = subprocess.run(
            ["bash", "-c", script], cwd=self.cwd, env=self.env, capture_output=True, text=True
        )
        self.output, self.errors = done.stdout, done.stderr
        if done.returncode != status:
            pytest.fail(
                f"{where}: exited {done.returncode}, not {status}:\n{code}\n--- stdout\n"
                f"{done.stdout}\n--- stderr\n{done.stderr}"
            )
        self.cwd = Path(state.resolve().read_text().strip())  # where the block stopped
        state.resolve().unlink()

    def serve(self, code: str, url: str, where: str) -> None:
        """Lines before the server's run in the foreground; the server in the background."""
        lines = code.splitlines()
        (index,) = [
            i for i, line in enumerate(lines) if re.match(r"uv run fastapi (dev|run)", line)
        ]
        self.shell("\n".join(lines[:index]), where)
        self.server = subprocess.Popen(
            ["bash", "-c", f"exec {lines[index].split('#')[0]}"],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                assert self.server.poll() is None, f"{where}: the server exited"
                assert time.monotonic() < deadline, f"{where}: {url} did not answer"
                time.sleep(0.3)
        if rest := "\n".join(lines[index + 1 :]).strip():
            self.shell(rest, where)

    def stop_server(self) -> None:
        """Ctrl+C, as the pages say; then make sure that nothing of the server's is left
        (`fastapi dev` runs the app in a child process of its reloader)."""
        if self.server is None:
            return
        server, self.server = self.server, None
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)

    def answer_questions(self, code: str, given: str, where: str) -> None:
        """Run Copier's interactive prompts in a terminal: type the given answers, press
        Enter for every other question, in the order copier.yml asks them."""
        answers = dict(item.split("=", 1) for item in re.findall(r'\w+="[^"]*"|\w+=\S+', given))
        answers = {key: value.strip('"') for key, value in answers.items()}
        config = yaml.safe_load((REPO / "copier.yml").read_text())
        questions = [
            (name, spec["help"])
            for name, spec in config.items()
            if not name.startswith("_") and isinstance(spec, dict) and spec.get("when") is not False
        ]
        controller, terminal = pty.openpty()
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        process = subprocess.Popen(
            ["bash", "-c", f"set -e\n{code}"],
            cwd=self.cwd,
            env={**self.env, "TERM": "xterm", "COLUMNS": "200"},
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            start_new_session=True,
        )
        os.close(terminal)
        seen = b""

        def read_until(text: bytes, seconds: float) -> None:
            nonlocal seen
            deadline = time.monotonic() + seconds
            while text not in seen:
                ready, _, _ = select.select([controller], [], [], 0.2)
                if ready:
                    try:
                        seen += os.read(controller, 65536)
                    except OSError:  # the command finished
                        break
                assert time.monotonic() < deadline, f"{where}: no prompt {text!r}:\n{seen!r}"

        for name, help_text in questions:
            prompt = help_text[:40].encode()  # a terminal may wrap the rest
            read_until(prompt, 120)
            seen = seen[seen.index(prompt) + len(prompt) :]
            os.write(controller, answers.pop(name, "").encode() + b"\r")
        while process.poll() is None:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(controller, 65536)
                except OSError:
                    break
        process.wait(timeout=900)
        os.close(controller)
        self.output = seen.decode(errors="replace")
        assert not answers, f"{where}: Copier never asked {sorted(answers)}"
        assert process.returncode == 0, f"{where}: exited {process.returncode}:\n{self.output}"
