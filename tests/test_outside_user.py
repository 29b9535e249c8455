"""The README's snippet for outside users (SB3 on ``gymnasium.make("MnistGlimpse-v0")``, none of the
project's scripts), run as written except for a shorter ``total_timesteps``."""

from __future__ import annotations

import math

import gymnasium as gym
from stable_baselines3.common.env_checker import check_env

import envs

# Keep this text identical to the README's snippet.
SNIPPET = '''
import gymnasium as gym
import envs  # registers MnistGlimpse-v0
from stable_baselines3 import PPO  # or SAC

env = gym.make("MnistGlimpse-v0", max_glimpses=25)
model = PPO("MlpPolicy", env, verbose=1)
model.learn(total_timesteps=200_000)

obs, info = env.reset(seed=0)
for t in range(25):
    action, _ = model.predict(obs, deterministic=True)
    obs, reward, terminated, truncated, info = env.step(action)
print(f"label {info['label']}, correct: {info['correct']}")
'''


def test_snippet_trains_and_runs_an_episode():
    code = SNIPPET.replace("total_timesteps=200_000", "total_timesteps=300")
    assert code != SNIPPET
    namespace: dict = {}
    exec(compile(code, "README snippet", "exec"), namespace)
    model, env = namespace["model"], namespace["env"]
    # PPO collects whole rollouts: at least n_steps (2048) steps, wrapped in SB3's Monitor
    assert model.num_timesteps == model.n_steps == 2048
    episodes = list(model.ep_info_buffer)
    assert len(episodes) == model.num_timesteps // 25  # every episode lasts exactly 25 glimpses
    assert all(episode["l"] == 25 and math.isfinite(episode["r"]) for episode in episodes)
    # the evaluation loop: deterministic actions inside the action space, an episode that ends at 25
    assert namespace["t"] == 24 and namespace["terminated"] and not namespace["truncated"]
    assert env.action_space.contains(namespace["action"])
    assert namespace["info"]["label"] in range(10) and isinstance(namespace["info"]["correct"], bool)
    assert math.isfinite(namespace["reward"])


def test_sb3_env_checker_passes():
    check_env(gym.make("MnistGlimpse-v0", split="test").unwrapped)
    assert envs.ENV_ID == "MnistGlimpse-v0"
