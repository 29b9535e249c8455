"""``obs_type="record"`` (the cells read and their grey levels) and ``action_type="pixel"``
(``Discrete(784)`` with ``action_masks``), in the single env, the batched env and the SB3 adapter."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.wrappers import FlattenObservation
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs  # noqa: F401 - registers MnistGlimpse-v0
from envs.sampler import Sampler
from envs.sb3 import MnistGlimpseSB3VecEnv

MODES = [("record", "continuous"), ("record", "pixel"), ("summary", "pixel")]


@pytest.mark.parametrize(("obs_type", "action_type"), MODES)
def test_both_checkers_pass(core, obs_type, action_type):
    kwargs = dict(split="test", max_glimpses=4, perception=core, obs_type=obs_type, action_type=action_type)
    env = gymnasium.make("MnistGlimpse-v0", render_mode="rgb_array", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a warning
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(gymnasium.make("MnistGlimpse-v0", **kwargs).unwrapped)


def test_the_record_holds_the_cells_read_and_their_values(core, test_split):
    env = gymnasium.make("MnistGlimpse-v0", split="test", max_glimpses=3, perception=core, obs_type="record")
    observation, _ = env.reset(options={"index": 0})
    assert observation["mask"].sum() == 0 and observation["step"][0] == 0
    image = test_split.images[0].numpy() / 255.0
    observation, *_ = env.step(np.array([-1.0, 1.0], dtype=np.float32))  # pixel (0, 27), a centre
    assert observation["mask"][27] == 1 and observation["mask"].sum() == 1
    assert observation["pixels"][27] == pytest.approx(image[0, 27])
    # between centres: the nearest cell is marked and the bilinear value stored
    observation, _, _, _, info = env.step(np.array([0.0, 0.0], dtype=np.float32))  # (13.5, 13.5)
    cell = 14 * 28 + 14  # 13.5 rounds half to even: 14
    assert observation["mask"][cell] == 1 and observation["pixels"][cell] == pytest.approx(info["value"])
    assert observation["step"][0] == 2
    np.testing.assert_array_equal(observation["summary"].shape, env.observation_space["summary"].shape)
    flat = FlattenObservation(env)
    assert flat.reset(seed=0)[0].shape == (flat.observation_space.shape[0],)


def test_pixel_actions_read_pixel_centres_and_masks_mark_the_pixels_read(core, test_split):
    env = gymnasium.make(
        "MnistGlimpse-v0", split="test", max_glimpses=3, perception=core, action_type="pixel", sampler="bilinear"
    )
    env.reset(options={"index": 0})
    assert env.unwrapped.action_masks().all() and env.unwrapped.action_masks().shape == (784,)
    _, _, _, _, info = env.step(np.int64(5 * 28 + 9))
    assert info["glimpse"].tolist() == [5.0, 9.0]
    assert info["value"] == pytest.approx(test_split.images[0, 5, 9].item() / 255.0)
    masks = env.unwrapped.action_masks()
    assert not masks[5 * 28 + 9] and masks.sum() == 783
    for bad in (784, -1, 1.5, np.array([3, 4])):
        with pytest.raises(ValueError, match="pixel action"):
            env.step(bad)
    assert env.unwrapped.action_masks().sum() == 783  # a refused step changed nothing
    with pytest.raises(ValueError, match='action_masks\\(\\) is for action_type="pixel"'):
        gymnasium.make("MnistGlimpse-v0", split="test", perception=core).unwrapped.action_masks()


@pytest.mark.parametrize(("obs_type", "action_type"), MODES)
def test_a_batched_env_equals_n_single_envs(core, obs_type, action_type):
    n, glimpses = 3, 4
    kwargs = dict(split="test", max_glimpses=glimpses, perception=core, obs_type=obs_type, action_type=action_type)
    vec = gymnasium.make_vec(
        "MnistGlimpse-v0", num_envs=n, vectorization_mode="vector_entry_point", device="cpu", **kwargs
    )
    singles = [gymnasium.make("MnistGlimpse-v0", **kwargs) for _ in range(n)]
    rng = np.random.default_rng(0)
    batch, _ = vec.reset(seed=7)
    single = [env.reset(seed=7 + k)[0] for k, env in enumerate(singles)]
    for _ in range(glimpses):
        if action_type == "pixel":
            actions = rng.integers(0, 784, size=n)
        else:
            actions = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
        for k in range(n):
            expected = single[k]
            got = batch[k] if obs_type == "summary" else {key: value[k] for key, value in batch.items()}
            if obs_type == "summary":
                np.testing.assert_allclose(got, expected, atol=1e-5)
            else:
                for key in expected:
                    np.testing.assert_allclose(got[key], expected[key], atol=1e-5)
        if action_type == "pixel":
            np.testing.assert_array_equal(vec.unwrapped.action_masks()[0], singles[0].unwrapped.action_masks())
        batch, rewards, *_ = vec.step(actions)
        outcomes = [env.step(actions[k]) for k, env in enumerate(singles)]
        single = [outcome[0] for outcome in outcomes]
        np.testing.assert_allclose(rewards, [outcome[1] for outcome in outcomes], atol=1e-5)


@pytest.mark.parametrize("action_type", ["continuous", "pixel"])
def test_unread_pixels_and_the_label_change_no_observation(core, test_split, action_type):
    """With the nearest sampler the record shows only the pixels read: altering every other pixel,
    or the label, leaves every observation unchanged."""
    if action_type == "pixel":
        actions = [np.int64(k) for k in (100, 400, 650)]
    else:
        actions = [np.array(a, dtype=np.float32) for a in ([-0.5, 0.2], [0.3, 0.3], [0.9, -0.7])]
    kwargs = dict(split="test", max_glimpses=3, perception=core, sampler="nearest", obs_type="record")

    def run(image, label):
        env = gymnasium.make("MnistGlimpse-v0", action_type=action_type, **kwargs)
        observations = [env.reset(options={"image": image, "label": label})[0]]
        infos = []
        for action in actions:
            observation, _, _, _, info = env.step(action)
            observations.append(observation)
            infos.append(info)
        return observations, [tuple(int(np.rint(c)) for c in info["glimpse"]) for info in infos]  # nearest cell

    original = test_split.images[3].numpy()
    reference, read = run(original, 1)
    altered = 255 - original  # every pixel changed ...
    for i, j in read:
        altered[i, j] = original[i, j]  # ... except those read
    for image, label in ((original, 2), (altered, 1)):
        observations, _ = run(image, label)
        for a, b in zip(reference, observations, strict=True):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])


def test_sb3_ppo_multi_input_and_maskable_ppo_train_on_the_record():
    """Smoke: SB3 PPO (MultiInputPolicy) and sb3-contrib's MaskablePPO (pixel actions, masks from the
    adapter) each train 20,000 steps; MaskablePPO's episodes never read a pixel twice."""
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.utils import get_action_masks
    from stable_baselines3 import PPO

    for algo, action_type in ((PPO, "continuous"), (MaskablePPO, "pixel")):
        env = MnistGlimpseSB3VecEnv(
            64, max_glimpses=5, obs_type="record", action_type=action_type, sampler="nearest", device="cpu"
        )
        model = algo("MultiInputPolicy", env, n_steps=5, batch_size=320, n_epochs=1, seed=0, device="cpu")
        model.learn(20_000)
        assert model.num_timesteps >= 20_000
    observation = env.reset()
    read = []
    for _ in range(5):
        masks = get_action_masks(env)
        assert masks.shape == (64, 784)
        actions, _ = model.predict(observation, action_masks=masks)
        read.append(actions)
        observation, *_ = env.step(actions)
    read = np.stack(read, 1)
    assert all(len(set(row)) == 5 for row in read.tolist())


@pytest.mark.parametrize("kind", ["fixed", "attention", "gaussian", "pixel", "pixel-memory"])
def test_every_policy_scores_the_same_through_the_environment(core, kind):
    """Every agent is evaluated through the environment; its figures equal those of the differentiable
    rollout (the same episode step, with gradients on), exactly."""
    from agents.attention import AttentionNetwork
    from agents.baselines import FixedSequence
    from agents.evaluation import accuracy_by_glimpse
    from agents.pixel_attention import PixelAttention
    from agents.reinforce import GaussianAttentionPolicy
    from agents.rollout import run_episodes
    from envs.data import load_mnist

    glimpses, size = 6, 300
    with torch.random.fork_rng():
        torch.manual_seed(1)
        policy = {
            "fixed": lambda: FixedSequence(glimpses),
            "attention": lambda: AttentionNetwork(core.observation_size, 32, glimpses),
            "gaussian": lambda: GaussianAttentionPolicy(core.observation_size, 32, glimpses),
            "pixel": lambda: PixelAttention(core.observation_size, glimpses, 32),
            "pixel-memory": lambda: PixelAttention(core.observation_size, glimpses, 32, memory="pixels"),
        }[kind]().eval()
        if kind.startswith("pixel"):  # random scores, so that the choices depend on what was read
            torch.nn.init.normal_(policy.net[-1].weight, std=1.0)
    test = load_mnist("test")
    logits = run_episodes(policy, core, Sampler("nearest"), test.images[:size].float() / 255.0, glimpses).logits
    expected = (logits.argmax(dim=-1) == test.labels[:size]).float().mean(dim=1)
    got = accuracy_by_glimpse(policy, core, glimpses, batch_size=size, limit=size)
    assert torch.equal(expected, got), (expected, got)


def test_the_shipped_agent_reproduces_its_documented_accuracy_through_the_environment(monkeypatch):
    import json
    from pathlib import Path

    from agents import shipped
    from agents.evaluation import accuracy_by_glimpse
    from run import accuracy_table

    policy, core, checkpoint = shipped.load_shipped_agent()
    study = Path(__file__).resolve().parents[1] / "experiments/results/studies/best_preset_one_command.json"
    documented = json.loads(study.read_text())["metrics"]["test_accuracy"]
    assert checkpoint["test_accuracy"] == documented
    assert accuracy_table(accuracy_by_glimpse(policy, core, checkpoint["glimpses"])) == documented
    assert shipped.AGENT_PATH.stat().st_size <= 5 * 2**20
    monkeypatch.setattr(shipped, "AGENT_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="shipped agent .* is damaged or replaced: SHA-256 .* Reinstall the package"):
        shipped.load_shipped_agent()


def test_the_demo_runs_the_shipped_agent(tmp_path, capsys):
    import train.demo as demo

    demo.main(demo.Args(episodes=1, out=tmp_path, figure=tmp_path / "digits.png"))
    printed = capsys.readouterr().out
    assert (tmp_path / "episode1.png").is_file() and "correct with the shipped agent" in printed
    from PIL import Image

    width, height = Image.open(tmp_path / "digits.png").size  # five digits across, two rows of them
    assert width > 1000 and height > 1000 and "one test image of each digit" in printed
