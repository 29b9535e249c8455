"""train/ppo.py and agents.ppo: a tiny PPO run writes the shared outputs, its checkpoint reloads with
train/evaluate.py to the same accuracy, and the evaluation path acts exactly as the environment."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from agents.checkpoint import load_agent
from agents.ppo import SB3GlimpsePolicy, VecStepFeature
from agents.rollout import run_episodes
from envs.data import load_mnist
from envs.sampler import Sampler
from envs.sb3 import MnistGlimpseSB3VecEnv

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"train_{name}", ROOT / "train" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    ppo = load_script("ppo")
    out = tmp_path_factory.mktemp("ppo")
    args = ppo.Args(
        glimpses=3, num_envs=16, total_steps=16 * 3 * 3, n_epochs=2, perception="joint", eval_every=48,
        eval_images=200, progress_bar=False, device="cpu", torch_threads=1, out=str(out),
    )
    return args, ppo.main(args), out


def test_outputs_and_metrics_schema(tiny_run):
    args, metrics, out = tiny_run
    for name in ("model.zip", "checkpoint.pt", "metrics.json", "glimpses.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert {"agent", "test_accuracy", "readout", "train_sampler", "train_seconds", "device", "seed"} <= set(metrics)
    assert metrics["agent"] == "ppo-joint" and metrics["perception"] == "joint" and metrics["readout"] == "nearest"
    assert set(metrics["test_accuracy"]) == {"1", "2", "3"}
    assert all(0.0 <= acc <= 1.0 for acc in metrics["test_accuracy"].values())
    assert metrics["env_steps"] == args.total_steps and metrics["env_steps_per_second"] > 0
    assert metrics["seconds_to_80_percent"] is None or metrics["seconds_to_80_percent"] >= 0
    assert metrics["seconds_to_80_percent_glimpses"] == 3
    curve = metrics["eval_subset_curve"]
    assert [point["env_steps"] for point in curve] == [16, 64, 112, 144]  # first step, every 48, and the end
    assert all(0.0 <= point["accuracy"] <= 1.0 for point in curve)


def test_evaluate_reproduces_the_accuracy(tiny_run):
    _, metrics, out = tiny_run
    evaluate = load_script("evaluate")
    result = evaluate.main(evaluate.Args(checkpoint=str(out / "checkpoint.pt"), device="cpu"))
    assert result["agent"] == "ppo-joint"
    assert result["test_accuracy"] == metrics["test_accuracy"]


def test_checkpoint_and_zip_act_alike(tiny_run):
    """The agent checkpoint (policy rebuilt from config + state dict) and SB3's zip give the same
    deterministic actions; joint training changed the saved core."""
    args, _, out = tiny_run
    policy, core, checkpoint = load_agent(out / "checkpoint.pt")
    assert isinstance(policy, SB3GlimpsePolicy) and checkpoint["policy"]["kind"] == "sb3-ppo"
    assert checkpoint["sb3_model"] == "model.zip" and checkpoint["glimpses"] == 3
    model = PPO.load(out / "model.zip", device="cpu")
    observations = torch.rand(32, core.observation_size)
    for step in range(3):
        with torch.no_grad():
            ours = policy(observations, step)
        theirs, _ = model.predict(np.concatenate([observations.numpy(), np.full((32, 1), step / 3, np.float32)], 1), deterministic=True)
        np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-6)
        assert ours.abs().max() <= 1.0
    from envs.perception import load_pretrained

    packaged = load_pretrained()
    assert any(not torch.equal(a, b) for a, b in zip(core.state_dict().values(), packaged.state_dict().values()))


def test_evaluation_path_matches_the_environment(tiny_run):
    """run_episodes with the wrapped policy (how accuracies are measured) and the SB3 env driven by
    model.predict take the same glimpses and reach the same predictions on the same test images."""
    args, _, out = tiny_run
    policy, core, _ = load_agent(out / "checkpoint.pt")
    model = PPO.load(out / "model.zip", device="cpu")
    n, glimpses = 8, 3
    env = VecStepFeature(MnistGlimpseSB3VecEnv(n, max_glimpses=glimpses, split="test", sampler="nearest", perception=core, device="cpu"), glimpses)
    env.set_options([{"index": k} for k in range(n)])
    obs = env.reset()
    for _ in range(glimpses):
        actions, _ = model.predict(obs, deterministic=True)
        obs, rewards, dones, infos = env.step(actions)
    assert dones.all()
    data = load_mnist("test")
    with torch.no_grad():
        episode = run_episodes(policy, core, Sampler("nearest"), data.images[:n].float() / 255.0, glimpses)
    final = np.stack([info["terminal_observation"][: core.observation_size] for info in infos])
    np.testing.assert_allclose(final[:, core.histogram_size :], torch.softmax(episode.logits[-1], -1).numpy(), atol=1e-5)
    assert [info["correct"] for info in infos] == (episode.logits[-1].argmax(-1) == data.labels[:n]).tolist()
    assert all(math.isfinite(info["episode"]["r"]) for info in infos)


def test_step_feature_wrapper(core):
    n, glimpses = 2, 3
    env = VecStepFeature(MnistGlimpseSB3VecEnv(n, max_glimpses=glimpses, split="test", perception=core, device="cpu"), glimpses)
    assert env.observation_space.shape == (core.observation_size + 1,) and env.observation_space.high[-1] == 1.0
    obs = env.reset()
    assert (obs[:, -1] == 0.0).all()
    for t in range(1, glimpses + 1):
        obs, _, dones, infos = env.step(np.zeros((n, 2), np.float32))
        assert (obs[:, -1] == (t % glimpses) / glimpses).all()
    assert dones.all() and all(info["terminal_observation"][-1] == 1.0 for info in infos)
    assert all(env.observation_space.contains(info["terminal_observation"]) for info in infos)
