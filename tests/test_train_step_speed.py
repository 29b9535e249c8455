"""benchmarks/train_step_speed.py --profile: one variant's steps under torch.profiler, and its refusal."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from agents.cli import UserError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("train_step_speed", ROOT / "benchmarks" / "train_step_speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_profile_lists_the_operators_of_one_variant(speed, tmp_path, capsys):
    out = tmp_path / "profile.json"
    args = speed.Args(
        steps=1, batch_size=4, max_glimpses=2, device="cpu", profile="pixel memory, greedy credit", json=out
    )
    shares = speed.main(args)
    assert sum(shares.values()) == pytest.approx(1.0) and all(share >= 0 for share in shares.values())
    assert "aten::" in capsys.readouterr().out  # the profiler's table
    record = json.loads(out.read_text())
    assert record["variant"] == "pixel memory, greedy credit" and record["device"] == "cpu"
    assert 0 < len(record["self_time_share"]) <= args.profile_rows


def test_an_unknown_variant_is_refused_before_any_work(speed, tmp_path):
    out = tmp_path / "profile.json"
    with pytest.raises(UserError, match="--profile 'best'"):
        speed.main(speed.Args(device="cpu", profile="best", json=out))
    assert not out.exists()
