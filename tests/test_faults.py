"""Faults a careful user runs into: damaged or non-finite checkpoints, empty files. Each gives a clear
error naming the problem and the fix."""

from __future__ import annotations

import json

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
        torch.save(damaged.checkpoint(), tmp_path / "core.pt")  # a diverged run's file (save itself refuses it)
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


def test_bad_constructor_arguments_and_seeds_are_refused():
    import gymnasium

    import envs  # noqa: F401

    for glimpses in (True, 0, 785, 1.5):
        with pytest.raises(ValueError, match="max_glimpses must be an integer in 1..784"):
            gymnasium.make("MnistGlimpse-v0", split="test", max_glimpses=glimpses)
    vec = gymnasium.make_vec("MnistGlimpse-v0", num_envs=2, vectorization_mode="vector_entry_point", device="cpu")
    with pytest.raises(ValueError, match="seed must be an int or a list of 2 ints, got 1.5"):
        vec.reset(seed=1.5)


def test_finite_float64_actions_past_float32_range_are_clipped_not_called_infinite():
    import gymnasium
    import numpy as np

    import envs  # noqa: F401

    env = gymnasium.make("MnistGlimpse-v0", split="test", max_glimpses=2)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([1e300, -1e300]))
    assert info["glimpse"].tolist() == [27.0, 0.0]
    vec = gymnasium.make_vec("MnistGlimpse-v0", num_envs=2, vectorization_mode="vector_entry_point", device="cpu")
    vec.reset(seed=0)
    _, _, _, _, info = vec.step(np.array([[1e300, 0.0], [0.0, -1e300]]))
    assert info["glimpse"][0, 0] == 27.0 and info["glimpse"][1, 1] == 0.0
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(np.array([np.inf, 0.0]))


def test_mnist_is_read_only_from_the_verified_package_files(tmp_path, monkeypatch):
    """Files planted where a torchvision cache would be (processed/*.pt) are never read."""
    from envs import data

    planted = tmp_path / "MNIST" / "processed"
    planted.mkdir(parents=True)
    torch.save(
        (torch.zeros(60000, 28, 28, dtype=torch.uint8), torch.zeros(60000, dtype=torch.long)), planted / "training.pt"
    )
    torch.save(
        (torch.zeros(10000, 28, 28, dtype=torch.uint8), torch.zeros(10000, dtype=torch.long)), planted / "test.pt"
    )
    for variable in ("MNIST_GLIMPSE_CACHE", "XDG_CACHE_HOME", "TMPDIR"):
        monkeypatch.setenv(variable, str(tmp_path))
    monkeypatch.setattr(data, "_CPU_CACHE", {})
    monkeypatch.setattr(data, "_DEVICE_CACHE", {})
    split = data.load_mnist("test")
    assert split.images.float().mean() > 30 and len(set(split.labels.tolist())) == 10


def test_a_damaged_packaged_core_is_refused(monkeypatch):
    from envs import perception

    monkeypatch.setitem(perception.PACKAGED_SHA256, "perception.pt", "0" * 64)
    with pytest.raises(ValueError, match="packaged core .* is damaged or replaced: SHA-256 .* Reinstall the package"):
        PerceptionCore.load(perception.PRETRAINED_PATH)


def test_a_finished_run_is_not_overwritten_without_overwrite_and_failed_writes_keep_the_old_file(tmp_path, core):
    from envs.atomic import write_atomic
    from run import claim_output

    run = tmp_path / "run"
    claim_output(run, overwrite=False)
    (run / "metrics.json").write_text("{}")
    with pytest.raises(FileExistsError, match="holds a finished run .* pass --overwrite"):
        claim_output(run, overwrite=False)
    assert (run / "metrics.json").is_file()  # refused: nothing changed
    claim_output(run, overwrite=True)
    assert not (run / "metrics.json").exists()  # a run that now fails leaves no finished-looking folder

    save_agent(run / "checkpoint.pt", "fixed-sequence", FixedSequence(2), core, 2)
    good = (run / "checkpoint.pt").read_bytes()

    def failing(handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(run / "checkpoint.pt", failing)
    assert (run / "checkpoint.pt").read_bytes() == good and sorted(p.name for p in run.iterdir()) == [
        ".lock",
        "checkpoint.pt",
    ]


@pytest.mark.parametrize("preset", ["continuous", "pixel-memory", "ablation-gdfs-schedule"])
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, preset):
    """Stopped mid-epoch (as by SIGINT), then --resume: the same final weights as a run never stopped
    (with the staged schedule: the same validations, stages and best weights too)."""
    import train.differentiable as script
    from run import Interrupted

    def args(out, **extra):
        settings = dict(
            max_glimpses=2, epochs=1, readout_epochs=0.5, batch_size=15_000, out=str(tmp_path / out), device="cpu"
        )
        if preset != "continuous":
            settings["pixel_candidates"] = 4
        if (
            preset == "ablation-gdfs-schedule"
        ):  # 3 steps per epoch on 55,000 images, 3 stages of 2 steps, a validation a step
            settings.update(epochs=2, pretrain_steps=2, val_images=5_000, val_every=1, stages=3, plateau_patience=1)
            settings.update(channels=4, n_bins=4)  # a small core: the schedule is under test
        return script.dataclasses.replace(script.preset_args(preset), **{**settings, **extra})

    script.main(args("whole"))
    with pytest.raises(Interrupted):
        script.main(args("cut"), stop_after=3)  # mid-epoch; the read-out steps then start a new epoch
    assert (tmp_path / "cut" / "resume.pt").is_file() and not (tmp_path / "cut" / "metrics.json").exists()
    with pytest.raises(FileExistsError, match="holds an interrupted run .* pass --resume"):
        script.main(args("cut"))
    with pytest.raises(ValueError, match="started with other values of \\['epochs'\\]"):
        script.main(args("cut", resume=True, epochs=5))
    script.main(args("cut", resume=True))
    assert not (tmp_path / "cut" / "resume.pt").exists()
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    for part in ("policy", "core"):
        for key, value in whole[part]["state_dict"].items():
            assert torch.equal(value, cut[part]["state_dict"][key]), (part, key)
    if preset == "ablation-gdfs-schedule":
        whole, cut = (
            json.loads((tmp_path / run / "metrics.json").read_text())["validation"] for run in ("whole", "cut")
        )
        for curve in (whole["curve"], cut["curve"]):
            for point in curve:
                point.pop("seconds")
        assert whole == cut and whole["stages_run"] == 3


def test_a_first_reset_with_a_partial_mask_and_empty_rl_budgets_are_refused(tmp_path, load_script):
    import gymnasium
    import numpy as np

    import envs  # noqa: F401

    vec = gymnasium.make_vec("MnistGlimpse-v0", num_envs=2, vectorization_mode="vector_entry_point", device="cpu")
    with pytest.raises(ValueError, match="first reset starts every sub-environment"):
        vec.reset(seed=0, options={"reset_mask": np.array([True, False])})
    vec.reset(seed=0, options={"reset_mask": np.array([True, True])})
    for name in ("reinforce", "ppo"):
        script = load_script(f"train/{name}.py")
        with pytest.raises(ValueError, match="--eval-images must be >= 1, got 0"):
            script.main(script.Args(eval_images=0, out=str(tmp_path / name)))


@pytest.mark.parametrize("name", ["reinforce", "ppo", "reinforce-pixel", "ppo-pixel"])
def test_an_interrupted_rl_run_resumes_to_the_uninterrupted_result(tmp_path, name):
    """REINFORCE and PPO, with continuous actions and with pixel actions on the record (core trained
    jointly by the env): stopped between two batches, then --resume, gives the weights, the core and the learning curve of a run never stopped."""
    import importlib

    from envs import perception
    from run import Interrupted

    script = importlib.import_module(f"train.{name.removesuffix('-pixel')}")
    batch = 16 * 3
    settings = dict(max_glimpses=3, num_envs=16, total_steps=6 * batch, eval_every=2 * batch, eval_images=50)
    settings.update(learn_perception=True, device="cpu", **({"progress_bar": False} if "ppo" in name else {}))
    if name.endswith("-pixel"):
        settings["action_type"] = "pixel"
    name = name.removesuffix("-pixel")

    def args(out, **extra):
        # Each call stands for its own process, as a real --resume is: reading the packaged core
        # builds a module first (torch's global generator moves), which a process does once.
        perception.clear_pretrained_cache()
        return script.Args(out=str(tmp_path / out), **{**settings, **extra})

    whole = script.main(args("whole"))
    with pytest.raises(Interrupted):  # reinforce counts batches, ppo env steps
        script.main(args("cut"), stop_after=3 if name == "reinforce" else 3 * batch)
    assert (tmp_path / "cut" / "resume.pt").is_file() and not (tmp_path / "cut" / "metrics.json").exists()
    with pytest.raises(FileExistsError, match="holds an interrupted run .* pass --resume"):
        script.main(args("cut"))
    with pytest.raises(ValueError, match="started with other values of \\['learning_rate'\\]"):
        script.main(args("cut", resume=True, learning_rate=0.5))
    resumed = script.main(args("cut", resume=True))
    assert not (tmp_path / "cut" / "resume.pt").exists()
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    curve = "learning_curve" if name == "reinforce" else "eval_subset_curve"
    accuracy = "accuracy_T" if name == "reinforce" else "accuracy"
    assert [p[accuracy] for p in resumed[curve]] == [p[accuracy] for p in whole[curve]]
    saved = [torch.load(tmp_path / run / "checkpoint.pt", weights_only=True) for run in ("whole", "cut")]
    for part in ("policy", "core"):
        for key, value in saved[0][part]["state_dict"].items():
            assert torch.equal(value, saved[1][part]["state_dict"][key]), (part, key)


def test_a_checkpoint_and_metrics_from_different_runs_are_refused(tmp_path, core):
    import json

    save_agent(tmp_path / "checkpoint.pt", "fixed-sequence", FixedSequence(2), core, 2, run_id="aaaa")
    (tmp_path / "metrics.json").write_text(json.dumps({"run_id": "aaaa"}))
    load_agent(tmp_path / "checkpoint.pt")
    (tmp_path / "metrics.json").write_text(json.dumps({"run_id": "bbbb"}))
    with pytest.raises(ValueError, match="come from different runs .* Rerun the training with --overwrite"):
        load_agent(tmp_path / "checkpoint.pt")


def test_sigterm_saves_a_resumable_run_and_exits_130(tmp_path):
    """A real signal to train/reinforce.py: it saves OUT/resume.pt and exits with status 130."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "run"
    command = [sys.executable, "train/reinforce.py", "--num-envs", "16", "--max-glimpses", "3", "--eval-images", "50"]
    command += ["--total-steps", "100000000", "--device", "cpu", "--out", str(out)]
    log = tmp_path / "log.txt"
    with log.open("w") as handle:
        process = subprocess.Popen(command, cwd=root, stdout=handle, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.time() + 120
            while "step/s" not in log.read_text() and time.time() < deadline and process.poll() is None:
                time.sleep(0.2)  # until the training loop reports progress
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
        finally:
            process.kill()
    output = log.read_text()
    assert process.returncode == 130, output
    assert "continue with the same command and --resume" in output
    state = torch.load(out / "resume.pt", weights_only=True)
    assert state["step"] > 0 and not (out / "metrics.json").exists()


def test_a_damaged_or_missing_resume_file_is_refused(tmp_path):
    from dataclasses import dataclass

    from run import ResumePoint

    @dataclass
    class Args:
        resume: bool = True
        overwrite: bool = False
        save_every: float = 60.0
        seed: int = 0

    with pytest.raises(ValueError, match="holds no interrupted run \\(drop --resume\\)"):
        ResumePoint(tmp_path, Args())
    for content in (b"", None):
        if content is None:
            torch.save({"args": {"seed": 0}}, tmp_path / "resume.pt")  # a file without the run's state
        else:
            (tmp_path / "resume.pt").write_bytes(content)
        with pytest.raises(ValueError, match="is damaged .* start again with --overwrite"):
            ResumePoint(tmp_path, Args())
    point = ResumePoint(tmp_path, Args(resume=False, overwrite=True))  # --overwrite: the old file goes
    assert not (tmp_path / "resume.pt").exists() and point.state is None
