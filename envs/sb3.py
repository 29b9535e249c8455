"""Stable-Baselines3 ``VecEnv`` over the batched ``MnistGlimpse-v0``: thousands of episodes, one object.

SB3's own vectorisation (``DummyVecEnv``) keeps one Python environment per sub-environment and steps
them in a Python loop. :class:`MnistGlimpseSB3VecEnv` instead drives one
:class:`~envs.vector_env.MnistGlimpseVectorEnv` (``autoreset_mode="same_step"``, which is SB3's
semantics) and only converts its batches to the numpy arrays SB3 expects::

    from stable_baselines3 import PPO
    from envs.sb3 import MnistGlimpseSB3VecEnv

    env = MnistGlimpseSB3VecEnv(num_envs=1024, max_glimpses=25, device="cpu")
    PPO("MlpPolicy", env, n_steps=25, batch_size=6400).learn(1_000_000)

This module imports SB3; ``import envs`` does not import it (the registration stays SB3-free).

What a step returns, for the same seeds and actions, equals ``DummyVecEnv`` of single
:class:`~envs.glimpse_env.MnistGlimpseEnv` (sub-environment ``k`` seeded ``seed + k``), up to float32
rounding of batch size 1 vs ``N``: observations (``float32`` ``(N, H + 10)``), rewards (``float32``
``(N,)``) and dones (``bool`` ``(N,)``; episodes are never truncated). ``infos`` is a list of ``N``
dicts, empty except where an episode ended, which get

* ``terminal_observation``: the episode's last observation (the returned one is the next episode's first);
* ``TimeLimit.truncated``: ``False``;
* ``episode``: ``{"r": return, "l": length, "t": seconds since the env was made}``, what SB3's
  ``Monitor`` writes, so SB3 logs ``rollout/ep_rew_mean`` and ``ep_len_mean`` without a wrapper;
* ``label``, ``correct`` and ``is_success`` (``= correct``; SB3 logs it as ``rollout/success_rate``).

Unlike the single environment, no per-glimpse ``glimpse`` / ``value`` / ``prediction`` infos are
produced (that is what keeps a step free of ``N`` Python dicts); read them from
``env.venv.sim`` if needed. Steps where no episode ends return a fresh list of the same cached empty
dicts (checked to be still empty before each reuse): do not keep them across steps and fill them in.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

try:
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn
except ModuleNotFoundError as error:
    if error.name is None or error.name.split(".")[0] != "stable_baselines3":
        raise
    raise ModuleNotFoundError(
        "envs.sb3 needs stable-baselines3, which is not installed: pip install -e '.[sb3]' "
        "(or pip install 'mnist-glimpse[sb3]').",
        name="stable_baselines3",
    ) from error

from .vector_env import MnistGlimpseVectorEnv


def _numpy(value: Any) -> Any:
    """A tensor, or a dict of tensors (``obs_type="record"``), as numpy."""
    if isinstance(value, dict):
        return {key: item.cpu().numpy() for key, item in value.items()}
    return value.cpu().numpy()


class MnistGlimpseSB3VecEnv(VecEnv):
    """``num_envs`` glimpse episodes as one SB3 ``VecEnv`` (numpy in, numpy out).

    :param num_envs: batch size ``N``.
    :param venv: an existing :class:`~envs.vector_env.MnistGlimpseVectorEnv` to wrap instead of
        building one (it must use ``autoreset_mode="same_step"``; ``num_envs`` and ``env_kwargs`` are
        then not allowed).
    :param env_kwargs: passed to :class:`~envs.vector_env.MnistGlimpseVectorEnv` (``max_glimpses``,
        ``split``, ``sampler``, ``reward``, ``perception``, ``learn_perception``, ``perception_lr``,
        ``device``).

    ``seed(s)`` (called by SB3's ``set_random_seed``) seeds sub-environment ``k`` with ``s + k`` at the
    next ``reset()``, like ``DummyVecEnv``; ``set_options`` takes the batched env's per-episode
    options (``index``, or ``image`` with ``label``), one dict per sub-environment, all with the same
    keys. The sub-environments are one batched object: ``get_attr`` / ``env_method`` read or call it
    once and repeat the answer per index, and ``set_attr`` applies to all of them.
    """

    def __init__(self, num_envs: int = 256, venv: MnistGlimpseVectorEnv | None = None, **env_kwargs: Any) -> None:
        if venv is None:
            if "autoreset_mode" in env_kwargs or "array_type" in env_kwargs:
                raise ValueError("MnistGlimpseSB3VecEnv sets autoreset_mode='same_step' and array_type='torch' itself.")
            venv = MnistGlimpseVectorEnv(num_envs, autoreset_mode="same_step", array_type="torch", **env_kwargs)
        elif env_kwargs:
            raise ValueError(f"Pass either venv or environment arguments, not both (got {sorted(env_kwargs)}).")
        if venv.array_type != "torch":
            raise ValueError(
                "MnistGlimpseSB3VecEnv needs a MnistGlimpseVectorEnv with array_type='torch' (it converts once)."
            )
        if venv.metadata["autoreset_mode"] != AutoresetMode.SAME_STEP:
            raise ValueError(
                "MnistGlimpseSB3VecEnv needs a MnistGlimpseVectorEnv with autoreset_mode='same_step' "
                "(SB3 resets finished episodes within the step that ends them)."
            )
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self.metadata = {**self.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}
        self._actions: np.ndarray | None = None
        self._returns = np.zeros(self.num_envs, dtype=np.float64)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._started = time.time()
        self._empty_infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]

    @property
    def core(self):
        """The perception core the environments run (the live, trained one with ``learn_perception``)."""
        return self.venv.core

    @property
    def max_glimpses(self) -> int:
        """Episode length ``T``."""
        return self.venv.max_glimpses

    # --- the SB3 VecEnv API ----------------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        seeds = None if all(seed is None for seed in self._seeds) else list(self._seeds)
        observation, info = self.venv.reset(seed=seeds, options=self._batched_options())
        self.reset_infos = [{"index": index} for index in info["index"].tolist()]
        self._reset_seeds()
        self._reset_options()
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return _numpy(observation)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(actions).")
        actions, self._actions = self._actions, None
        # the batched env checks the actions before it converts them (a float pixel action, NaN, a bool...)
        observation, reward, terminated, _, info = self.venv.step(actions)
        observation = _numpy(observation)  # new tensors every step: safe to hand out without a copy
        reward = reward.cpu().numpy()
        dones = terminated.cpu().numpy()
        self._returns += reward
        self._lengths += 1
        if dones.any():
            infos = self._episode_end_infos(dones, info)
        else:
            infos = self._no_infos()
        return observation, reward, dones, infos

    def state_dict(self) -> dict:
        """The batched environment's state (:meth:`~envs.vector_env.MnistGlimpseVectorEnv.state_dict`) and
        the running episode returns and lengths, so that training can stop and continue exactly."""
        return {
            "venv": self.venv.state_dict(),
            "returns": torch.from_numpy(self._returns.copy()),
            "lengths": torch.from_numpy(self._lengths.copy()),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`'s output (an environment built with the same arguments)."""
        self.venv.load_state_dict(state["venv"])
        self._returns = state["returns"].numpy().copy()
        self._lengths = state["lengths"].numpy().copy()

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._check_all(indices, f"set_attr({attr_name!r})")
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        if method_name == "action_masks":  # one row per sub-environment (sb3-contrib's get_action_masks)
            masks = self.action_masks()
            return [masks[k] for k in self._get_indices(indices)]
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def action_masks(self) -> np.ndarray:
        """``(N, 784)`` bool: the pixels each episode has not read (``action_type="pixel"``)."""
        return _numpy(self.venv.action_masks())

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]  # no Gymnasium wrappers inside

    def get_images(self) -> Sequence[np.ndarray | None]:
        warnings.warn(
            "MnistGlimpseSB3VecEnv does not render; render single episodes with gymnasium.make('MnistGlimpse-v0', render_mode='rgb_array').",
            stacklevel=2,
        )
        return [None for _ in range(self.num_envs)]

    # --- helpers ---------------------------------------------------------------------------------------

    def _no_infos(self) -> list[dict[str, Any]]:
        """``N`` empty dicts: the cached ones (in a new list) unless somebody wrote into them."""
        if any(self._empty_infos):
            self._empty_infos = [{} for _ in range(self.num_envs)]
        return self._empty_infos.copy()

    def _episode_end_infos(self, dones: np.ndarray, info: dict[str, Any]) -> list[dict[str, Any]]:
        """Fill the dicts of the finished episodes (a Python pass over them, once per ``T`` steps)."""
        infos = self._no_infos()
        ended = np.flatnonzero(dones)
        final = _numpy(info["final_obs"])
        labels = info["final_info"]["label"].cpu().numpy()[ended].tolist()
        correct = info["final_info"]["correct"].cpu().numpy()[ended].tolist()
        returns = self._returns[ended].tolist()
        lengths = self._lengths[ended].tolist()
        seconds = round(time.time() - self._started, 6)
        for k, label, right, ret, length in zip(ended.tolist(), labels, correct, returns, lengths):
            infos[k] = {
                "terminal_observation": {key: v[k] for key, v in final.items()}
                if isinstance(final, dict)
                else final[k],
                "TimeLimit.truncated": False,
                "episode": {"r": ret, "l": length, "t": seconds},
                "label": label,
                "correct": right,
                "is_success": right,
            }
        self._returns[ended] = 0.0
        self._lengths[ended] = 0
        return infos

    def _batched_options(self) -> dict[str, np.ndarray] | None:
        """Stack the per-sub-environment reset options of ``set_options`` into batched ones."""
        if not any(self._options):
            return None
        keys = set(self._options[0])
        if any(set(options) != keys for options in self._options):
            raise ValueError(
                "MnistGlimpseSB3VecEnv resets all sub-environments together: set_options needs the same keys "
                "('index', or 'image' and 'label') for every sub-environment."
            )
        return {key: np.stack([np.asarray(options[key]) for options in self._options]) for key in keys}

    def _check_all(self, indices: VecEnvIndices, what: str) -> None:
        if indices is not None and sorted(self._get_indices(indices)) != list(range(self.num_envs)):
            raise ValueError(f"{what}: the sub-environments share one batched env; it applies to all of them or none.")
