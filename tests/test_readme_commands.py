"""Every command the README shows runs, as written, from an empty working directory.

The command lines are read out of README.md itself (each line of a ```bash block that starts
with `python -m workbench` or `make`), so an edit that breaks a command fails this test. Each
runs on the embedded model, shortened only through its own documented flags (appended, so they
override the written values: argparse and `--set` keep the last). A command that cannot run here
carries `# not run by the tests: <reason>` in the README and is skipped with that reason.
The commands that read or write `runs/` run in README order in one test, in one working
directory (later ones read the runs that `train ... --set output.run_dir=runs/tickets`
writes); the others run in order in a second test, so the two can use both cores.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOT_RUN = "# not run by the tests:"
# The documented flags that shorten each command; appended to the written line.
SHORTER = {
    "demo": ["--max-steps", "2", "--held-out", "4", "--validation", "4"],
    "train": [
        "--set", "hyperparameters.max_steps=2",
        "--set", "hyperparameters.eval_every=2",
        "--set", "evaluation.held_out=4",
        "--set", "data.split=4",
        "--set", "hyperparameters.batch_size=2",
        "--set", "output.samples=1",
    ],
    "resume": ["--max-steps", "3"],
    "dpo": ["--max-steps", "2", "--held-out", "2", "--batch-size", "2"],
    "rl": ["--max-steps", "2", "--held-out", "2", "--batch-size", "2", "--num-generations", "2"],
}  # fmt: skip


@dataclass(frozen=True)
class ReadmeCommand:
    line: int  # README.md line number
    text: str  # the command as written, without its comment
    skip_reason: str | None = None

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text)

    @property
    def subcommand(self) -> str:
        words = self.words
        return words[1] if words[0] == "make" else words[3]

    @property
    def group(self) -> str:
        """The xdist group: the commands that share the run folders, and the rest."""
        uses_runs = self.subcommand == "runs" or "runs/" in self.text
        return "readme-runs" if uses_runs else "readme-other"


def readme_commands(readme: str) -> list[ReadmeCommand]:
    """The commands of every ```bash block of `readme`, in order."""
    commands, in_bash = [], False
    for number, line in enumerate(readme.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("```"):
            in_bash = not in_bash and stripped[3:].strip() in ("bash", "sh", "shell")
            continue
        if not in_bash or not re.match(r"(python -m workbench|make) ", stripped):
            continue
        command, _, comment = stripped.partition("#")
        reason = None
        if ("#" + comment).startswith(NOT_RUN):
            reason = comment[len(NOT_RUN) - 1 :].strip()
        commands.append(ReadmeCommand(number, command.strip(), reason))
    return commands


def runnable(command: ReadmeCommand, python: str = sys.executable) -> list[str]:
    """The argv that runs `command` here, shortened."""
    words = command.words
    extra = SHORTER.get(command.subcommand, [])
    if words[0] == "make":
        args = " ".join(shlex.quote(word) for word in extra)
        return ["make", "-C", str(ROOT), *words[1:], *([f"ARGS={args}"] if args else [])]
    return [python, *words[1:], *extra]


COMMANDS = readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_shows_the_main_commands():
    written = [c.text for c in COMMANDS]
    assert written[:2] == ["make demo", "make test"], "the set-up's two commands come first"
    subcommands = {c.subcommand for c in COMMANDS}
    expected = {"demo", "train", "check", "preview", "resume", "report", "runs", "export"}
    assert expected | {"dpo", "rl"} <= subcommands
    trained = {c.words[4] for c in COMMANDS if c.subcommand == "train"}
    assert trained == {f"configs/{p.name}" for p in (ROOT / "configs").glob("*.yaml")}


def test_ci_runs_the_readmes_test_command():
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line.strip()]
    assert ci[-1].strip() == "make test" and "make test" in [c.text for c in COMMANDS]


def test_a_broken_command_is_reported_with_its_readme_line(tmp_path):
    readme = "```bash\npython -m workbench demo --held-outt 8\n```\n"
    (command,) = readme_commands(readme)
    assert command.line == 2
    argv = runnable(command)
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--held-outt" in result.stderr


GROUPS = sorted({c.group for c in COMMANDS})


def not_run_here(command: ReadmeCommand) -> str | None:
    """Why a README command is not run by this test, or None."""
    if command.skip_reason:
        return f"README.md:{command.line}: {command.skip_reason}"
    if command.text == "make test":
        return "`make test` is the command running this test (CI runs it: .ci/run)"
    return None


@pytest.mark.embedded
@pytest.mark.parametrize("group", GROUPS)
def test_readme_commands_run_as_written(group: str, tmp_path: Path):
    """The group's commands, in README order, in one empty working directory: the ones that
    share `runs/` depend on each other, so one test runs them all (whatever worker it lands on)
    and names the README line of the first that fails."""
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_RUNS"}  # default ./runs
    if sys.prefix != sys.base_prefix:  # make's set-up uses this environment, not a new .venv
        env["VIRTUAL_ENV"] = sys.prefix
    commands = [c for c in COMMANDS if c.group == group and not not_run_here(c)]
    assert commands, f"no README command in group {group}"
    for command in commands:
        result = subprocess.run(
            runnable(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
        )
        output = (result.stdout + result.stderr)[-4000:]
        assert result.returncode == 0, (
            f"README.md:{command.line} `{command.text}` failed:\n{output}"
        )


@pytest.mark.parametrize(
    "command",
    [c for c in COMMANDS if not_run_here(c)],
    ids=[f"L{c.line}-{c.subcommand}" for c in COMMANDS if not_run_here(c)],
)
def test_readme_commands_not_run_here_say_why(command: ReadmeCommand):
    pytest.skip(not_run_here(command))
