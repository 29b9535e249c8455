"""The one command that regenerates the general core (train/general_core.py): its stages, and how it
continues an interrupted chain. The stages themselves are the train/ scripts, tested on their own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tyro

from agents.cli import UserValueError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chain(load_script):
    return load_script("train/general_core.py")


def test_every_stage_parses_with_its_own_script(chain, load_script, tmp_path):
    """Each stage's command is one its script accepts, so a typo fails here, not hours into a chain."""
    for stage in chain.STAGES:
        argv = stage.command(tmp_path, ("--device", "cpu", "--torch-threads", "1"))[2:]
        script = load_script(f"train/{stage.script}")
        args = script.parse_args(argv) if hasattr(script, "parse_args") else tyro.cli(script.Args, args=argv)
        assert args.out == stage.out_flag(tmp_path)
        assert getattr(args, "max_seconds", 0.0) == 0.0 and getattr(args, "budget_seconds", 0.0) == 0.0


def test_the_last_stage_reads_the_shipped_agent_and_every_agent_stage(chain, tmp_path):
    last = chain.STAGES[-1]
    agents = last.flags[last.flags.index("--trajectory-agents") + 1 :]
    assert agents[0] == "shipped"
    assert [Path(a).parent.name for a in agents[1:]] == list(chain.AGENTS) == list(last.needs)
    assert len(agents) == 12
    for stage in chain.STAGES:
        if "--perception" in stage.flags:  # the RL agents train on the first core
            assert stage.needs == ("core-1",)


def test_plan_refuses_unknown_stages_and_stages_whose_inputs_are_missing(chain, tmp_path):
    with pytest.raises(UserValueError, match=r"--stages \['bogus'\]: unknown"):
        chain.plan(chain.Args(out=str(tmp_path), stages=("bogus",)))
    with pytest.raises(UserValueError, match=r"stage reinforce-s0 reads \['core-1'\].*add them to --stages"):
        chain.plan(chain.Args(out=str(tmp_path), stages=("reinforce-s0",)))
    (tmp_path / "core-1").mkdir()
    (tmp_path / "core-1" / "metrics.json").write_text("{}")
    assert [s.name for s in chain.plan(chain.Args(out=str(tmp_path), stages=("reinforce-s0",)))] == ["reinforce-s0"]


def test_an_interrupted_stage_resumes_and_a_finished_one_is_skipped(chain, tmp_path):
    """The dry run prints every stage's state and command and runs nothing."""
    (tmp_path / "fixed-sequence").mkdir()
    (tmp_path / "fixed-sequence" / "metrics.json").write_text("{}")
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "resume.pt").write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "train/general_core.py", "--out", str(tmp_path), "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert [line.split("]")[0][1:] for line in lines] == list(chain.STAGE_NAMES)
    assert "[fixed-sequence] finished, skipped: python train/differentiable.py --preset fixed-sequence" in lines[1]
    assert lines[2].startswith("[best] to run: python train/differentiable.py --preset best") and "--resume" in lines[2]
    assert "--resume" not in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "fixed-sequence"]
