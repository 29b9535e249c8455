"""benchmarks/train_step_speed.py --profile: one variant's steps under torch.profiler, and its refusal."""

from __future__ import annotations

import json

import pytest

from agents.cli import UserError


@pytest.fixture(scope="module")
def speed(load_script):
    return load_script("benchmarks/train_step_speed.py")


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
    with pytest.raises(UserError, match="--json writes the --profile table"):
        speed.main(speed.Args(device="cpu", json=out))
    assert not out.exists()
