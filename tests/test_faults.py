"""Faults a careful user runs into: damaged or non-finite checkpoints, empty files. Each gives a clear
error naming the problem and the fix."""

from __future__ import annotations

import pytest
import torch

from agents.baselines import FixedSequence
from agents.checkpoint import load_agent, save_agent
from envs.perception import PerceptionCore


def test_a_core_with_a_nan_or_inf_weight_is_refused(tmp_path, core):
    for bad in (float("nan"), float("inf")):
        with torch.no_grad():
            damaged = PerceptionCore(core.config)
            damaged.load_state_dict(core.state_dict())
            next(damaged.parameters()).view(-1)[3] = bad
        damaged.save(tmp_path / "core.pt")
        with pytest.raises(ValueError, match="non-finite .* Restore the file .* or retrain it"):
            PerceptionCore.load(tmp_path / "core.pt")


def test_agent_checkpoints_that_are_empty_keyless_or_non_finite_are_refused(tmp_path, core):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="is not an agent checkpoint .*retrain it"):
        load_agent(tmp_path / "empty.pt")
    torch.save({"format": "mnist-glimpse/agent/v1"}, tmp_path / "keyless.pt")
    with pytest.raises(ValueError, match="missing \\['core', 'policy', 'glimpses'\\]"):
        load_agent(tmp_path / "keyless.pt")
    policy = FixedSequence(3)
    with torch.no_grad():
        policy.theta[1, 0] = float("nan")
    save_agent(tmp_path / "nan.pt", "fixed-sequence", policy, core, 3)
    with pytest.raises(ValueError, match="non-finite .* in \\['theta'\\]; retrain it"):
        load_agent(tmp_path / "nan.pt")
