"""envs.sb3: the SB3 VecEnv adapter follows SB3's VecEnv API and equals DummyVecEnv of single envs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from envs.glimpse_env import MnistGlimpseEnv
from envs.sb3 import MnistGlimpseSB3VecEnv
from envs.vector_env import MnistGlimpseVectorEnv

TOL = dict(rtol=1e-5, atol=1e-5)  # batch size 1 vs N changes float32 reduction order a little


@pytest.fixture
def make_pair(core):
    """``make_pair(n, glimpses)`` -> (adapter, DummyVecEnv of single envs), same core, test split."""

    def make(n: int = 4, glimpses: int = 3, **kwargs):
        settings = dict(max_glimpses=glimpses, split="test", perception=core, device="cpu", **kwargs)
        adapter = MnistGlimpseSB3VecEnv(n, **settings)
        dummy = DummyVecEnv([lambda: MnistGlimpseEnv(**settings) for _ in range(n)])
        return adapter, dummy

    return make


def test_import_envs_does_not_import_sb3():
    code = (
        "import sys, gymnasium, envs; env = gymnasium.make('MnistGlimpse-v0', split='test'); "
        "assert 'stable_baselines3' not in sys.modules, 'SB3 imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_vec_env_api(core):
    n, glimpses = 5, 2
    env = MnistGlimpseSB3VecEnv(n, max_glimpses=glimpses, split="test", perception=core, device="cpu")
    assert isinstance(env, VecEnv) and env.num_envs == n
    assert env.observation_space.shape == (core.observation_size,) and env.action_space.shape == (2,)
    assert env.render_mode is None and env.max_glimpses == glimpses and env.core is core
    env.seed(3)
    obs = env.reset()
    assert obs.shape == (n, core.observation_size) and obs.dtype == np.float32
    assert all(env.observation_space.contains(o) for o in obs)
    assert [set(info) for info in env.reset_infos] == [{"index"}] * n
    for step in range(1, 2 * glimpses + 1):
        actions = np.stack([env.action_space.sample() for _ in range(n)])
        obs, rewards, dones, infos = env.step(actions)
        assert obs.shape == (n, core.observation_size) and obs.dtype == np.float32
        assert all(env.observation_space.contains(o) for o in obs)
        assert rewards.shape == (n,) and rewards.dtype == np.float32 and np.isfinite(rewards).all()
        assert dones.shape == (n,) and dones.dtype == np.bool_
        assert isinstance(infos, list) and len(infos) == n and all(isinstance(i, dict) for i in infos)
        assert dones.all() == (step % glimpses == 0) and dones.all() == dones.any()
        for info in infos:
            if dones.any():
                assert set(info) == {
                    "terminal_observation",
                    "TimeLimit.truncated",
                    "episode",
                    "label",
                    "correct",
                    "is_success",
                }
                assert info["TimeLimit.truncated"] is False and info["episode"]["l"] == glimpses
                assert info["is_success"] == info["correct"] and 0 <= info["label"] <= 9
            else:
                assert info == {}
    assert env.get_attr("max_glimpses") == [glimpses] * n
    assert env.get_attr("max_glimpses", indices=[1, 3]) == [glimpses] * 2
    assert env.has_attr("core") and not env.has_attr("no_such_attribute")
    assert env.env_is_wrapped(object) == [False] * n
    assert env.env_method("__repr__", indices=[0, 2]) == [repr(env.venv)] * 2  # called once on the batched env
    with pytest.raises(ValueError, match="share one batched env"):
        env.set_attr("max_glimpses", 7, indices=[0])
    env.close()


def test_adapter_equals_dummy_vec_env_across_episodes(make_pair):
    """Same seeds and actions: same observations, rewards, dones, terminal observations, labels and
    Monitor-style episode returns, over three episodes (two boundaries), actions partly out of range."""
    n, glimpses = 4, 3
    adapter, dummy = make_pair(n, glimpses)
    assert adapter.seed(11) == dummy.seed(11)
    np.testing.assert_allclose(adapter.reset(), dummy.reset(), **TOL)
    assert [i["index"] for i in adapter.reset_infos] == [i["index"] for i in dummy.reset_infos]
    rng = np.random.default_rng(0)
    returns = np.zeros(n)
    ends = 0
    for _ in range(3 * glimpses + 1):
        actions = rng.uniform(-1.2, 1.2, size=(n, 2)).astype(np.float32)
        obs, rewards, dones, infos = adapter.step(actions)
        ref_obs, ref_rewards, ref_dones, ref_infos = dummy.step(actions)
        np.testing.assert_allclose(obs, ref_obs, **TOL)
        np.testing.assert_allclose(rewards, ref_rewards, **TOL)
        np.testing.assert_array_equal(dones, ref_dones)
        returns += ref_rewards
        for k in range(n):
            assert ("terminal_observation" in infos[k]) == bool(ref_dones[k])
            if ref_dones[k]:
                np.testing.assert_allclose(
                    infos[k]["terminal_observation"], ref_infos[k]["terminal_observation"], **TOL
                )
                assert infos[k]["label"] == ref_infos[k]["label"] and infos[k]["correct"] == ref_infos[k]["correct"]
                assert infos[k]["TimeLimit.truncated"] is False and ref_infos[k]["TimeLimit.truncated"] is False
                assert infos[k]["episode"]["r"] == pytest.approx(returns[k], abs=1e-4)
                assert infos[k]["episode"]["l"] == glimpses
                returns[k] = 0.0
                ends += 1
        # both load the same images (the batched env's per-sub-env streams = single envs seeded seed + k)
        assert adapter.venv.sim.indices.tolist() == [int(env.sim.indices[0]) for env in dummy.envs]
    assert ends == 3 * n


def test_terminal_observation_is_the_last_one_before_the_reset(core):
    """``terminal_observation`` is what an env without autoreset returns at the last glimpse; the
    returned observation is the next episode's first (empty histogram, uniform prediction)."""
    n, glimpses = 3, 2
    settings = dict(split="test", perception=core, device="cpu")
    venv = MnistGlimpseVectorEnv(n, glimpses, autoreset_mode="same_step", array_type="torch", **settings)
    adapter = MnistGlimpseSB3VecEnv(venv=venv)
    plain = MnistGlimpseVectorEnv(n, glimpses, autoreset_mode="next_step", array_type="numpy", **settings)
    adapter.seed(4)
    adapter.reset()
    plain.reset(seed=4)
    rng = np.random.default_rng(1)
    for _ in range(glimpses):
        actions = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
        obs, _, dones, infos = adapter.step(actions)
        last, *_ = plain.step(actions)
    assert dones.all()
    for k in range(n):
        np.testing.assert_allclose(infos[k]["terminal_observation"], last[k], **TOL)
        assert infos[k]["terminal_observation"][: core.histogram_size].any()
    np.testing.assert_array_equal(obs[:, : core.histogram_size], 0.0)
    np.testing.assert_allclose(obs[:, core.histogram_size :], 0.1)


def test_empty_infos_are_not_polluted(core):
    env = MnistGlimpseSB3VecEnv(3, max_glimpses=5, split="test", perception=core, device="cpu")
    env.reset()
    actions = np.zeros((3, 2), dtype=np.float32)
    infos = env.step(actions)[3]
    infos[1]["mine"] = 1  # a user writing into a returned dict...
    infos.append("junk")  # ... or into the list
    again = env.step(actions)[3]
    assert again == [{}, {}, {}]  # ... does not leak into the next step


def test_set_options_and_seed(core):
    n = 3
    env = MnistGlimpseSB3VecEnv(n, max_glimpses=2, split="test", perception=core, device="cpu")
    env.set_options([{"index": 7}, {"index": 8}, {"index": 9}])
    env.reset()
    assert [info["index"] for info in env.reset_infos] == [7, 8, 9]
    env.seed(0)
    env.reset()
    first = [info["index"] for info in env.reset_infos]
    env.seed(0)
    env.reset()
    assert [info["index"] for info in env.reset_infos] == first  # seeds are used once, at the next reset
    env.set_options([{"index": 1}, {}, {"index": 2}])
    with pytest.raises(ValueError, match="same keys"):
        env.reset()


def test_constructor_errors(core):
    with pytest.raises(ValueError, match="same_step"):
        MnistGlimpseSB3VecEnv(venv=MnistGlimpseVectorEnv(2, 2, perception=core, device="cpu", array_type="torch"))
    with pytest.raises(ValueError, match="array_type='torch'"):
        MnistGlimpseSB3VecEnv(
            venv=MnistGlimpseVectorEnv(2, 2, perception=core, device="cpu", autoreset_mode="same_step")
        )
    with pytest.raises(ValueError, match="sets autoreset_mode"):
        MnistGlimpseSB3VecEnv(2, autoreset_mode="next_step", perception=core, device="cpu")
