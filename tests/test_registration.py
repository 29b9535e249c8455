"""envs/__init__.py: lazy registration of MnistGlimpse-v0 with Gymnasium."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import warnings

import gymnasium
import numpy as np
import pytest

import envs


def run_python(code: str, cwd) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (outside the repository, so the installed package is used)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_import_does_not_import_torch(tmp_path):
    result = run_python(
        """
        import sys
        import envs
        assert 'torch' not in sys.modules, 'import envs imported torch'
        assert 'envs.glimpse_env' not in sys.modules and 'envs.vector_env' not in sys.modules
        import gymnasium
        assert 'MnistGlimpse-v0' in gymnasium.registry
        gymnasium.register_envs(envs)
        assert 'torch' not in sys.modules
        print('ok')
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_make_with_module_prefix_in_fresh_process(tmp_path):
    result = run_python(
        """
        import sys
        import gymnasium
        assert 'envs' not in sys.modules
        env = gymnasium.make('envs:MnistGlimpse-v0', split='test', max_glimpses=2)
        assert 'envs' in sys.modules
        assert type(env.unwrapped).__name__ == 'MnistGlimpseEnv'
        assert env.spec.id == 'MnistGlimpse-v0'
        obs, info = env.reset(seed=0)
        assert obs.shape == env.observation_space.shape and env.observation_space.contains(obs)
        _, _, terminated, _, _ = env.step(env.action_space.sample())
        assert not terminated
        _, _, terminated, _, info = env.step(env.action_space.sample())
        assert terminated and 'label' in info
        print('ok', info['label'])
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ")


def test_registered_spec():
    spec = gymnasium.spec("MnistGlimpse-v0")
    assert envs.ENV_ID == "MnistGlimpse-v0"
    assert spec.entry_point == "envs.glimpse_env:MnistGlimpseEnv"
    assert spec.vector_entry_point == "envs.vector_env:MnistGlimpseVectorEnv"
    assert spec.max_episode_steps is None  # the env terminates itself; never truncated


def test_reimport_does_not_reregister():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Gymnasium warns when an id is registered twice
        importlib.reload(envs)
    assert gymnasium.spec("MnistGlimpse-v0").entry_point == "envs.glimpse_env:MnistGlimpseEnv"


def test_lazy_attributes():
    from envs.data import load_mnist
    from envs.glimpse_env import MnistGlimpseEnv
    from envs.perception import PerceptionConfig, PerceptionCore, load_pretrained
    from envs.sampler import Sampler
    from envs.soft_ordering import SOHE, RecurrentSoftOrdering, SoftOrdering
    from envs.vector_env import MnistGlimpseVectorEnv

    assert envs.MnistGlimpseEnv is MnistGlimpseEnv
    assert envs.MnistGlimpseVectorEnv is MnistGlimpseVectorEnv
    assert envs.PerceptionCore is PerceptionCore and envs.PerceptionConfig is PerceptionConfig
    assert envs.load_pretrained is load_pretrained and envs.load_mnist is load_mnist
    assert envs.Sampler is Sampler
    assert (
        envs.SOHE is SOHE and envs.SoftOrdering is SoftOrdering and envs.RecurrentSoftOrdering is RecurrentSoftOrdering
    )
    assert set(envs.__all__) >= {"ENV_ID", "MnistGlimpseEnv", "MnistGlimpseVectorEnv", "PerceptionCore"}
    for name in envs.__all__:
        assert getattr(envs, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        envs.Nope  # noqa: B018


def test_make_passes_kwargs_and_wraps(core):
    env = gymnasium.make("MnistGlimpse-v0", split="test", max_glimpses=3, perception=core, sampler="nearest")
    assert isinstance(env.unwrapped, envs.MnistGlimpseEnv)
    assert env.unwrapped.max_glimpses == 3 and env.unwrapped.sim.sampler.mode == "nearest"
    assert env.spec.kwargs["max_glimpses"] == 3
    with pytest.raises(gymnasium.error.ResetNeeded):  # the standard order enforcing
        env.step(np.zeros(2, dtype=np.float32))
    env.reset(seed=0)
    env.step(np.zeros(2, dtype=np.float32))
