"""TorchRL (the ``torchrl`` extra) rolls the environment out as it comes: the batched env behind
``GymWrapper``, Gymnasium's vector env of single envs behind ``GymEnv(..., num_envs=N)``, and the single
env with its infos read by ``auto_register_info_dict``."""

from __future__ import annotations

import gymnasium
import pytest
import torch

import envs

torchrl_envs = pytest.importorskip("torchrl.envs")

gymnasium.register_envs(envs)

GLIMPSES = 3
SETTINGS = dict(split="test", max_glimpses=GLIMPSES, device="cpu")


def check_labels(rollout, batch_dims: int) -> None:
    """The info keys are read at every step; the label is -1 except where an episode ended."""
    done = rollout["next", "done"].squeeze(-1)
    label = rollout["next", "label"]
    assert done.shape == label.shape and len(label.shape) == batch_dims + 1
    assert bool(done.any()) and bool((label[~done] == -1).all())
    for key in ("index", "glimpse", "value", "prediction", "correct"):
        assert ("next", key) in rollout.keys(include_nested=True)


@pytest.mark.parametrize("mode", ["same_step", "disabled"])
def test_gym_wrapper_rolls_out_the_batched_env(mode):
    vec = gymnasium.make_vec(
        "MnistGlimpse-v0", num_envs=4, vectorization_mode="vector_entry_point", autoreset_mode=mode, **SETTINGS
    )
    env = torchrl_envs.GymWrapper(vec)
    torchrl_envs.check_env_specs(env)
    rollout = env.rollout(2 * GLIMPSES + 1, break_when_any_done=False)
    assert rollout.batch_size == torch.Size([4, 2 * GLIMPSES + 1])
    assert rollout["next", "done"].squeeze(-1).sum(dim=1).tolist() == [2, 2, 2, 2]
    if mode == "same_step":  # the terminal infos, read from final_info: the true labels of the ended episodes
        check_labels(rollout, 1)
        done = rollout["next", "done"].squeeze(-1)
        assert bool(((rollout["next", "label"][done] >= 0) & (rollout["next", "label"][done] <= 9)).all())


def test_gym_env_rolls_out_gymnasiums_vector_env_of_single_envs():
    # AsyncVectorEnv's workers are fresh processes: the "module:" prefix makes each import (and register) the env
    env = torchrl_envs.GymEnv("envs:MnistGlimpse-v0", num_envs=2, **SETTINGS)
    try:
        torchrl_envs.check_env_specs(env)
        rollout = env.rollout(2 * GLIMPSES + 1, break_when_any_done=False)
        assert rollout.batch_size == torch.Size([2, 2 * GLIMPSES + 1])
        check_labels(rollout, 1)
    finally:
        env.close()


def test_auto_register_info_dict_reads_the_single_envs_infos():
    env = torchrl_envs.GymEnv("MnistGlimpse-v0", **SETTINGS).auto_register_info_dict()
    torchrl_envs.check_env_specs(env)
    rollout = env.rollout(2 * GLIMPSES + 1, break_when_any_done=False)
    check_labels(rollout, 0)
    done = rollout["next", "done"].squeeze(-1)
    assert bool((rollout["next", "label"][done] >= 0).all())
    assert rollout["next", "prediction"].shape == (2 * GLIMPSES + 1, 10)
    assert rollout["next", "correct"].dtype == torch.bool and rollout["next", "index"].dtype == torch.int64
