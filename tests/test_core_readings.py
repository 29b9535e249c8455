"""experiments/core_readings.py: every core read under every glimpse policy, with its largest fall."""

from __future__ import annotations

import json

import numpy as np

import experiments.core_readings as core_readings
from envs.perception import PRETRAINED_PATH


def test_largest_fall():
    assert core_readings.largest_fall(np.array([0.1, 0.2, 0.2, 0.5])) == 0.0
    assert abs(core_readings.largest_fall(np.array([0.1, 0.4, 0.3, 0.35, 0.2])) - 0.2) < 1e-9


def test_every_policy_is_read_and_recorded(tmp_path):
    out = tmp_path / "readings.json"
    args = core_readings.Args(cores=(str(PRETRAINED_PATH),), images=16, max_glimpses=12, settle_after=4, out=str(out))
    results = core_readings.main(args)
    readings = results["cores"][PRETRAINED_PATH.name]
    assert set(readings) == {"random continuous", "random pixels", "settling", "shipped agent"}
    for reading in readings.values():
        assert len(reading["accuracy"]) == 12 and reading["largest_fall"] >= 0
    # the settling policy is the random continuous one until it settles (same generator, same draws)
    assert readings["settling"]["accuracy"][:4] == readings["random continuous"]["accuracy"][:4]
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
