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
    assert set(readings) == {"random continuous", "random pixels", "settling", "spread sequence", "shipped agent"}
    for reading in readings.values():
        assert len(reading["accuracy"]) == 12 and reading["largest_fall"] >= 0
    # the settling policy is the random continuous one until it settles (same generator, same draws)
    assert readings["settling"]["accuracy"][:4] == readings["random continuous"]["accuracy"][:4]
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))


def test_the_spread_sequence_reads_the_same_locations_in_every_image():
    """Through the environment, the spread sequence scores as a fixed sequence of its locations does
    when the core replays that sequence's recorded glimpses."""
    import torch

    from agents.baselines import FixedSequence, spread_sequence
    from agents.evaluation import agent_glimpses
    from envs.data import load_mnist
    from envs.perception import PerceptionCore

    core = PerceptionCore.load(PRETRAINED_PATH).eval()
    locations = spread_sequence(6)
    curve = core_readings.random_policy_accuracy(
        core, core_readings.Args(cores=(), images=64, max_glimpses=6), pixel=False, sequence=locations.numpy()
    )
    fixed = FixedSequence(6)
    with torch.no_grad():
        fixed.theta.copy_(torch.atanh(locations))
    test = load_mnist("test")
    coords, values = agent_glimpses(fixed, core, 6, test.images[:64])
    replayed = core_readings.replay_accuracy(core, coords, values, test.labels[:64])
    assert np.allclose(curve, replayed)


def test_first_reads_leave_a_re_read_cell_out():
    import torch

    from envs.perception import PerceptionCore

    core = PerceptionCore.load(PRETRAINED_PATH).eval()
    labels = torch.tensor([3, 7])
    # the second episode glimpses its first cell again (10.2 rounds to 10): that glimpse is left out
    coords = torch.tensor([[[5.0, 6.0], [10.0, 12.0], [14.0, 14.0]], [[10.0, 12.0], [10.2, 12.0], [14.0, 14.0]]])
    values = torch.tensor([[0.0, 0.5, 1.0], [0.5, 0.7, 1.0]])
    curve, share = core_readings.first_reads_accuracy(core, coords, values, labels)
    assert curve.shape == (3,) and share == 5 / 6
    with torch.no_grad():
        kept = core.replay(coords[1:, [0, 2]], values[1:, [0, 2]])  # the second episode without its re-read
        full = core.replay(coords[1:], values[1:])
    again = core_readings.first_reads_accuracy(core, coords[1:], values[1:], labels[1:])[0]
    assert again[1] == float(kept[0].argmax(-1) == 7)  # after the re-read: the state after the first glimpse
    assert again[2] == float(kept[1].argmax(-1) == 7)
    assert not torch.equal(full[2], kept[1])  # the re-read does change what replay computes
