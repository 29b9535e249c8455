"""One name per concept (docs/runs.md, Names): every retired flag of a training script is refused, before
the parser reads the command line, with exit status 2 and one line that names the flag that replaced it."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from agents.cli import NAMES_DOC, check_retired, refuse_retired

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["differentiable", "reinforce", "ppo", "gdfs", "pretrain_perception", "evaluate"]


def flags(script) -> set[str]:
    return {"--" + field.name.replace("_", "-") for field in dataclasses.fields(script.Args)}


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_retired_flag_names_a_flag_the_script_has(name):
    script = importlib.import_module(f"train.{name}")
    assert script.RETIRED and "--glimpses" in script.RETIRED
    for old, new in script.RETIRED.items():
        assert new.split()[0] in flags(script) and old not in flags(script), (old, new)


def test_a_retired_flag_exits_with_status_2_and_one_line_naming_its_replacement(capsys):
    retired = {"--glimpses": "--max-glimpses", "--core": "--perception"}
    for argv, old, new in (
        (["--seed", "1", "--glimpses", "10"], "--glimpses", "--max-glimpses"),
        (["--glimpses=10"], "--glimpses", "--max-glimpses"),
        (["--core", "runs/x/core.pt"], "--core", "--perception"),
    ):
        with pytest.raises(SystemExit) as stopped:
            refuse_retired(retired, argv)
        assert stopped.value.code == 2
        error = capsys.readouterr().err
        assert error == f"error: {old} is retired: pass {new} instead (the names: {NAMES_DOC}).\n"
    with pytest.raises(ValueError, match="--eval-glimpses is retired: pass --eval-max-glimpses"):
        check_retired(["--eval_glimpses", "3"], {"--eval-glimpses": "--eval-max-glimpses"})  # tyro's other spelling
    # The new names, names that only start like a retired one, and what follows `--` pass.
    kept = ["--max-glimpses", "10", "--core-head-hidden", "64", "--core-start", "scratch"]
    assert refuse_retired(retired, kept) == kept
    assert refuse_retired(retired, ["--seed", "0", "--", "--glimpses"]) == ["--seed", "0", "--", "--glimpses"]


@pytest.mark.parametrize("name", ["differentiable", "pretrain_perception"])
def test_a_preset_script_refuses_a_retired_flag(name, capsys):
    script = importlib.import_module(f"train.{name}")
    with pytest.raises(SystemExit) as stopped:
        script.parse_args(["--glimpses", "3"])
    assert stopped.value.code == 2 and "pass --max-glimpses instead" in capsys.readouterr().err
    assert script.parse_args(["--max-glimpses", "3"]).max_glimpses == 3


def test_a_script_run_with_a_retired_flag_says_its_new_name():
    done = subprocess.run(
        [sys.executable, "train/reinforce.py", "--glimpses", "10"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: --glimpses is retired: pass --max-glimpses instead (the names: {NAMES_DOC})."
    ]


@pytest.mark.parametrize(
    "script",
    ["experiments/core_readings.py", "benchmarks/train_step_speed.py", "benchmarks/gdfs_step_speed.py"],
)
def test_experiments_and_benchmarks_refuse_their_retired_flags(script):
    done = subprocess.run([sys.executable, script, "--glimpses", "3"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.splitlines() == [
        f"error: --glimpses is retired: pass --max-glimpses instead (the names: {NAMES_DOC})."
    ]
