"""experiments/gdfs_curve.py: the power-law fit through the curves' tails, and its refusals."""

from __future__ import annotations

import json
import math

import pytest

from agents.cli import UserError
from experiments import gdfs_curve


def curve(exponent: float, scale: float) -> list[dict]:
    """A curve whose error (%) is exactly ``scale * steps**exponent`` at every glimpse count."""
    return [
        {
            "step": step,
            "seconds": 0.0,
            "accuracy": {g: 1 - scale * max(step, 1) ** exponent / 100 for g in gdfs_curve.GLIMPSES},
        }
        for step in (0, 1, 10, 50, 100, 500, 1000)
    ]


def test_fit_recovers_a_power_law_and_its_step_count():
    law = gdfs_curve.fit({"seed0": curve(-0.25, 40.0)}, "25", fit_from=50)
    assert law["points"] == 4
    assert law["exponent"] == pytest.approx(-0.25, abs=1e-3)
    assert law["log10_error_at_1"] == pytest.approx(math.log10(40.0), abs=1e-3)
    # 96% is an error of 4% = 40 * steps**-0.25, at steps = 10**4
    assert law["steps_to_target"] == pytest.approx(10_000, rel=1e-2)
    assert law["accuracy_at_published_steps"] == pytest.approx(100 - 40 * 58_000**-0.25, abs=0.05)


def test_fit_of_a_flat_curve_names_no_step_count():
    assert gdfs_curve.fit({"seed0": curve(0.0, 20.0)}, "10", fit_from=50)["steps_to_target"] is None


def test_fit_refuses_too_few_points():
    with pytest.raises(UserError, match="--fit-from"):
        gdfs_curve.fit({"seed0": curve(-0.25, 40.0)}, "5", fit_from=5000)


def test_from_results_refits_and_draws(tmp_path):
    results = tmp_path / "curves.json"
    results.write_text(json.dumps({"gdfs": {"seed0": curve(-0.2, 30.0)}, "best": {"seed0": curve(-0.3, 50.0)}}))
    figure = tmp_path / "curve.png"
    out = gdfs_curve.main(gdfs_curve.Args(from_results=True, results=str(results), figure=str(figure)))
    assert figure.stat().st_size > 0
    written = json.loads(results.read_text())
    assert written["fits"] == out["fits"]
    assert written["fits"]["best"]["25"]["exponent"] == pytest.approx(-0.3, abs=1e-3)


def test_a_run_without_a_curve_is_refused(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"seed": 0, "test_accuracy": {}}))
    with pytest.raises(UserError, match="--curve-images"):
        gdfs_curve.read_curve(str(tmp_path))
    with pytest.raises(UserError, match="not found"):
        gdfs_curve.read_curve(str(tmp_path / "missing"))
