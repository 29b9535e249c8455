"""The snippet for outside users in docs/environment.md (SB3 on ``gymnasium.make("MnistGlimpse-v0")``,
none of the project's scripts), extracted from the page and run as written; then what it did is checked."""

from __future__ import annotations

import math
import re
from pathlib import Path

import gymnasium as gym
from stable_baselines3.common.env_checker import check_env

import envs

PAGE = Path(__file__).resolve().parents[1] / "docs" / "environment.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", PAGE.read_text(), flags=re.S | re.M)
SNIPPET = next(block for block in BLOCKS if 'PPO("MlpPolicy", env' in block)


def test_snippet_trains_and_runs_an_episode():
    namespace: dict = {}
    exec(compile(SNIPPET, "docs/environment.md snippet", "exec"), namespace)
    model, env = namespace["model"], namespace["env"]
    # PPO collects whole rollouts: at least n_steps (2048) steps, wrapped in SB3's Monitor
    assert model.num_timesteps >= model.n_steps == 2048
    episodes = list(model.ep_info_buffer)
    assert len(episodes) == model.num_timesteps // 25  # every episode lasts exactly 25 glimpses
    assert all(episode["l"] == 25 and math.isfinite(episode["r"]) for episode in episodes)
    # the evaluation loop: deterministic actions inside the action space, an episode that ends at 25
    assert namespace["t"] == 24 and namespace["terminated"] and not namespace["truncated"]
    assert env.action_space.contains(namespace["action"])
    info = namespace["info"]
    assert info["label"] in range(10) and info["correct"].dtype == bool and info["correct"].shape == ()
    assert math.isfinite(namespace["reward"])


def test_sb3_env_checker_passes():
    check_env(gym.make("MnistGlimpse-v0", split="test").unwrapped)
    assert envs.ENV_ID == "MnistGlimpse-v0"
