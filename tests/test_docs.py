"""What README.md and docs/ tell users to run, run: every ```python block is executed as written, and
every command of the README's ```bash blocks and results table parses with its script's own parser
(the runs themselves are smoke-tested by each script's tests)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import tyro

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "docs" / "environment.md"]


def fenced(path: Path, language: str) -> list[str]:
    """The bodies of the ```language blocks of ``path``."""
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def commands(path: Path) -> list[str]:
    """Every command line of the ```bash blocks (comments dropped) and every `python ...` in backticks of a table row."""
    lines = [line.split("#")[0].strip() for block in fenced(path, "bash") for line in block.splitlines()]
    table = [
        c for row in path.read_text().splitlines() if row.startswith("|") for c in re.findall(r"`(python [^`]+)`", row)
    ]
    return [line for line in lines + table if line]


SNIPPETS = [
    pytest.param(code, id=f"{path.name}#{k}") for path in PAGES for k, code in enumerate(fenced(path, "python"))
]
COMMANDS = [pytest.param(line, id=line) for line in commands(ROOT / "README.md")]


def test_the_pages_have_snippets_and_commands():
    assert (
        len(fenced(ROOT / "README.md", "python")) >= 1 and len(fenced(ROOT / "docs" / "environment.md", "python")) >= 2
    )
    assert any(line.startswith("make test") for line in commands(ROOT / "README.md"))


@pytest.mark.parametrize("code", SNIPPETS)
def test_python_snippet_runs_as_written(code, tmp_path, monkeypatch, capsys):
    """Each snippet runs, prints what it promises to show, and its last observation is one the env's
    observation space allows."""
    monkeypatch.chdir(tmp_path)  # whatever a snippet writes stays out of the repository
    namespace = {"__name__": "__snippet__"}
    exec(compile(code, "snippet", "exec"), namespace)
    assert "print(" not in code or capsys.readouterr().out.strip()
    env, obs = namespace.get("env"), namespace.get("obs")
    if env is not None and isinstance(obs, np.ndarray):
        assert env.observation_space.contains(obs)


@pytest.mark.parametrize("line", COMMANDS)
def test_command_parses(line, load_script):
    words = shlex.split(line)
    if words[0] == "make":
        targets = re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
        assert all(word in targets for word in words[1:] if "=" not in word), f"{line}: no such Makefile target"
        return
    assert words[0] == "python" and (ROOT / words[1]).is_file(), f"{line}: no such script"
    script = load_script(words[1])
    if hasattr(script, "parse_args"):
        args = script.parse_args(words[2:])
        script.check_args(args)
    else:
        args = tyro.cli(script.Args, args=words[2:])
    if words[1] == "experiments/compare.py":
        script.with_warm_starts(args.methods)
