"""The README stays true: every `dejavu ...` command it shows parses with the real CLI,
and .ci/run runs the README's install and test commands."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from dejavu.cli import build_parser

REPO = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("#", 1)[0].strip()
            for part in re.split(r"&&|;", line):
                part = part.strip()
                if part.startswith("dejavu "):
                    cmds.append(part)
    return cmds


def test_readme_commands_parse():
    cmds = _readme_commands()
    assert any(c.startswith("dejavu demo") for c in cmds)
    assert any(c.startswith("dejavu attack") for c in cmds)
    parser = build_parser()
    for c in cmds:
        argv = shlex.split(re.sub(r"\$\{?(\w+)\}?", r"X\1", c))[1:]
        parser.parse_args(argv)  # exits (SystemExit) on an unknown flag


def test_ci_runs_the_readme_commands():
    text = (REPO / "README.md").read_text()
    quick = re.search(r"## Quickstart.*?```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert len(quick) == 2, "the quickstart is exactly two commands"
    install = quick[0].split("&&")[2].strip()
    test_cmd = quick[1].split("&&")[1].strip()
    ci = (REPO / ".ci" / "run").read_text()
    assert install in ci and test_cmd in ci
