"""What a person sees at the console: short space reprs, --help in plain words, the table that
train/evaluate.py prints (JSON behind --json), the extra named when SB3 is missing, progress bars that
say why a stage stopped, and PPO's accuracy lines and resumed bar."""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import pickle
import re
import runpy
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from tqdm import tqdm

import envs
from agents.baselines import FixedSequence
from agents.checkpoint import save_agent
from agents.cli import plain_text

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [  # every script a user runs: train/, experiments/, benchmarks/
    path
    for folder in ("train", "experiments", "benchmarks")
    for path in sorted((ROOT / folder).glob("*.py"))
    if path.name != "__init__.py" and path.relative_to(ROOT).as_posix() != "train/run.py"  # the scripts' shared module
]
MARKUP = re.compile(r"``|:[a-z]+(:[a-z]+)?:`")


def test_the_observation_spaces_print_short_with_their_bounds_unchanged(core):
    gymnasium.register_envs(envs)
    env = gymnasium.make("MnistGlimpse-v0", max_glimpses=25, perception=core)
    space, size = env.observation_space, core.histogram_size
    assert isinstance(space, gymnasium.spaces.Box)
    assert repr(space) == f"Box(0.0, [25.0 x {size}, 1.0 x 10], ({size + 10},), float32)"
    np.testing.assert_array_equal(space.high, np.r_[np.full(size, 25.0), np.ones(10)].astype(np.float32))
    assert (space.low == 0).all() and repr(pickle.loads(pickle.dumps(space))) == repr(space)
    record = gymnasium.make("MnistGlimpse-v0", max_glimpses=25, perception=core, obs_type="record").observation_space
    assert len(str(record)) < 300 and "x 10]" in str(record)


def test_envs_sb3_without_stable_baselines3_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] == "stable_baselines3"] + ["stable_baselines3"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed, in a process that imported it
    monkeypatch.delitem(sys.modules, "envs.sb3", raising=False)
    with pytest.raises(ModuleNotFoundError, match=r"needs stable-baselines3.*pip install -e '\.\[sb3\]'") as error:
        importlib.import_module("envs.sb3")
    assert error.value.name == "stable_baselines3"


def test_plain_text_drops_sphinx_markup():
    text = (
        ":class:`~envs.sb3.MnistGlimpseSB3VecEnv`, :func:`agents.pretrain.pretrain_core`, :mod:`a <b.c>`, ``OUT/tb``::"
    )
    assert plain_text(text) == "MnistGlimpseSB3VecEnv, agents.pretrain.pretrain_core, a, OUT/tb:"
    assert plain_text(None) == ""


@pytest.mark.parametrize("script", SCRIPTS, ids=[path.name for path in SCRIPTS])
def test_help_shows_the_docstring_without_markup(script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    first_line = (Path(script).read_text().split('"""')[1]).strip().splitlines()[0]
    assert plain_text(first_line).split(":")[0][:40] in shown
    assert not MARKUP.search(shown), MARKUP.search(shown)


@pytest.fixture
def checkpoint(tmp_path, core):
    torch.manual_seed(0)
    path = tmp_path / "run" / "checkpoint.pt"
    save_agent(path, "fixed-sequence", FixedSequence(2), core, 2)
    return path


@pytest.mark.slow
def test_evaluate_prints_the_table_and_json_behind_a_flag(checkpoint, capsys):
    from train import evaluate

    result = evaluate.main(evaluate.Args(checkpoint=str(checkpoint), device="cpu"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "fixed-sequence: test accuracy (%), 10,000 test images, nearest read-out"
    assert lines[1].split() == ["glimpses", "1", "2"] and len(lines) == 3
    assert [float(v) for v in lines[2].split()[1:]] == [round(100 * v, 1) for v in result["test_accuracy"].values()]

    again = evaluate.main(evaluate.Args(checkpoint=str(checkpoint), device="cpu", json=True))
    assert json.loads(capsys.readouterr().out) == again == result
    assert len(result["accuracy_by_glimpse"]) == 2


def test_a_stage_ended_early_says_why_and_leaves_a_complete_bar(capsys):
    from run import end_stage

    bar = tqdm(total=3000 + 100, file=io.StringIO())
    bar.update(950)
    line = end_stage(bar, "core pretraining", "time budget of 168 s reached (--budget-seconds)", 950, 3000)
    assert line == "core pretraining: time budget of 168 s reached (--budget-seconds) at step 950/3,000"
    assert capsys.readouterr().out == line + "\n"
    assert bar.total == 950 + 100  # the later stage's 100 steps are still to come
    bar.update(100)
    assert bar.n == bar.total
    bar.close()


@pytest.mark.slow
def test_ppo_prints_its_evaluations_and_a_resumed_bar_starts_where_it_resumed(tmp_path, core, capsys):
    from train import ppo

    core.save(tmp_path / "core.pt")
    args = ppo.Args(
        max_glimpses=2,
        num_envs=8,
        total_steps=160,
        n_epochs=1,
        eval_every=48,
        eval_images=50,
        perception=str(tmp_path / "core.pt"),
        device="cpu",
        out=str(tmp_path / "run"),
    )
    with pytest.raises(KeyboardInterrupt):
        ppo.main(args, stop_after=64)
    first = capsys.readouterr()
    assert re.search(r"^step 8: test accuracy \d+\.\d% after 2 glimpses on 50 test images", first.out, flags=re.M)
    metrics = ppo.main(dataclasses.replace(args, resume=True))
    resumed = capsys.readouterr()
    steps = [int(s.replace(",", "")) for s in re.findall(r"^step ([\d,]+): test accuracy", resumed.out, flags=re.M)]
    assert steps == [point["env_steps"] for point in metrics["eval_subset_curve"] if point["env_steps"] > 64]
    bars = re.findall(r"(\d+(?:\.\d)?)/(\d+)", resumed.err)
    assert bars[0] == ("64.0", "160") and bars[-1] == ("160", "160")  # from the resumed step to the end, no further
