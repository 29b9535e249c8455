"""experiments/off_the_shelf.py: SB3's algorithms with their defaults on the environment as a user makes it."""

import json

import pytest

pytest.importorskip("sb3_contrib")

from experiments import off_the_shelf  # noqa: E402


def test_record_algorithms_train_score_and_resume(tmp_path, capsys):
    """PPO (MultiInputPolicy, continuous actions) and MaskablePPO (pixel actions) on the record: one
    rollout each, scored on a few test images; a second call reuses the files it finds."""
    args = off_the_shelf.Args(
        algos=("ppo-record", "maskable-ppo"), seeds=(0,), steps=64, out=str(tmp_path), test_images=40
    )
    off_the_shelf.main(args)
    for algo, kwargs in (("ppo-record", {"obs_type": "record"}), ("maskable-ppo", off_the_shelf.RECORD)):
        result = json.loads((tmp_path / algo / "seed0.json").read_text())
        assert result["algo"] == algo and result["env_kwargs"] == kwargs and result["steps"] == 64
        assert set(result["test_accuracy"]) == {"1", "2", "5", "10", "25"}
        assert all(0.0 <= v <= 1.0 for v in result["test_accuracy_sampled"].values())
    table = capsys.readouterr().out
    assert "| ppo-record (record, continuous actions) | 1 |" in table
    assert "| maskable-ppo (record, pixel actions) | 1 |" in table
    before = (tmp_path / "ppo-record" / "seed0.json").read_text()
    off_the_shelf.main(args)
    assert (tmp_path / "ppo-record" / "seed0.json").read_text() == before
    assert "training" not in capsys.readouterr().out


def test_record_algorithms_refuse_observation_wrappers(tmp_path):
    args = off_the_shelf.Args(algos=("ppo-record",), out=str(tmp_path), normalize=True)
    with pytest.raises(ValueError, match=r"\['ppo-record'\] run on the record observation as it is"):
        off_the_shelf.main(args)
