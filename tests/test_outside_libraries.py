"""The recipes of docs/outside-libraries.md run as written, each with its library, on a token budget; the
page's figures are those of the runs' JSON records in experiments/results/outside_libraries/."""

from __future__ import annotations

import json
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "docs" / "recipes"
PAGE = ROOT / "docs" / "outside-libraries.md"
RESULTS = ROOT / "experiments" / "results" / "outside_libraries"

#: recipe -> (module that must import for it to run, the smallest budget that makes one update)
CASES = {
    "sb3_ppo": ("stable_baselines3", 64),
    "sb3_maskable_ppo": ("sb3_contrib", 64),
    "torchrl_ppo": ("torchrl.collectors", 1600),
    "rllib_ppo": ("ray.rllib.algorithms.ppo", 2000),
    "skrl_ppo": ("skrl.agents.torch.ppo", 1600),
    "tianshou_ppo": ("tianshou.algorithm", 2000),
    "cleanrl_ppo": ("torch", 1600),
    "random_policy": ("numpy", 0),
}


@pytest.fixture
def recipe_env(monkeypatch, tmp_path):
    """Recipes run in this process from a scratch folder; torch's thread count and RNG are restored after."""
    monkeypatch.syspath_prepend(str(RECIPES))
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        yield tmp_path
    torch.set_num_threads(threads)


@pytest.mark.parametrize("recipe", list(CASES))
def test_recipe_runs_and_reports_its_test_accuracy(recipe, recipe_env, monkeypatch, capsys):
    module, steps = CASES[recipe]
    pytest.importorskip(module)
    out = recipe_env / "result.json"
    argv = [str(RECIPES / f"{recipe}.py"), "--total-steps", str(steps), "--test-images", "16", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(argv[0], run_name="__main__")
    printed = re.search(r"test accuracy at 25 glimpses ([\d.]+)% \(16 test images\)", capsys.readouterr().out)
    assert printed is not None
    record = json.loads(out.read_text())
    assert 0.0 <= record["accuracy_25"] <= 1.0
    assert float(printed.group(1)) == pytest.approx(100 * record["accuracy_25"], abs=0.051)  # printed to 0.1
    assert record["total_steps"] == steps and record["test_images"] == 16 and record["seed"] == 0
    assert f"{recipe}.py --total-steps {steps}" in record["command"]


def test_every_recipe_is_on_the_page_with_the_figure_of_its_record():
    """Each recipe's row names its JSON record, and its figure and command are the record's."""
    page = PAGE.read_text()
    rows = re.findall(
        r"^\| \[`(\w+)\.py`\]\(recipes/\w+\.py\) \|.*\| ([\d.]+) \| `([^`]+)` \| \[[^]]+\]\(([^)]+)\) \|$", page, re.M
    )
    assert {name for name, *_ in rows} == set(CASES)
    for name, figure, command, path in rows:
        record = json.loads((PAGE.parent / path).resolve().read_text())
        assert float(figure) == round(100 * record["accuracy_25"], 1), name
        assert command == record["command"], name
        assert f"docs/recipes/{name}.py" in command
    assert sorted(RESULTS.glob("*.json")) == sorted({(PAGE.parent / path).resolve() for *_, path in rows})
