"""envs/__init__.py: lazy registration of MnistGlimpse-v0 with Gymnasium."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch

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


def test_the_environment_needs_only_gymnasium_numpy_and_torch(tmp_path):
    """Making, stepping and batching the env imports none of the extras (render, sb3, train, experiments)."""
    result = run_python(
        """
        import sys
        import gymnasium, envs
        env = gymnasium.make('MnistGlimpse-v0', split='test', max_glimpses=2)
        env.reset(seed=0)
        env.step(env.action_space.sample())
        vec = gymnasium.make_vec('MnistGlimpse-v0', num_envs=4, vectorization_mode='vector_entry_point', device='cpu')
        vec.reset(seed=0)
        vec.step(vec.action_space.sample())
        extras = {'PIL', 'stable_baselines3', 'matplotlib', 'tyro', 'tensorboard', 'torchvision', 'ray'}  # torch imports tqdm itself when present
        print(sorted(extras & {name.split('.')[0] for name in sys.modules}))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


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


def test_time_aware_observation_adds_the_glimpse_counter(core):
    """The env reports its episode length in its spec, so TimeAwareObservation works without a TimeLimit."""
    from gymnasium.wrappers import TimeAwareObservation

    for glimpses in (25, 7):
        made = gymnasium.make("MnistGlimpse-v0", split="test", perception=core, max_glimpses=glimpses)
        assert made.spec.max_episode_steps == glimpses and made.spec.kwargs["max_glimpses"] == glimpses
        env = TimeAwareObservation(made, normalize_time=True)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (core.observation_size + 1,) and obs[-1] == 0.0
        for _ in range(glimpses):
            obs, _, terminated, truncated, info = env.step(np.zeros(2, dtype=np.float32))
        assert obs[-1] == 1.0 and terminated and not truncated and "label" in info


def test_make_vec_returns_numpy_and_gymnasium_vector_wrappers_apply(core):
    from gymnasium.wrappers import vector as wrappers

    kwargs = dict(split="test", perception=core, max_glimpses=3, device="cpu", array_type="numpy")
    for mode in ("vector_entry_point", "sync"):  # the same keyword arguments in every mode
        vec = gymnasium.make_vec("MnistGlimpse-v0", num_envs=4, vectorization_mode=mode, **kwargs)
        obs, _ = vec.reset(seed=0)
        assert isinstance(obs, np.ndarray) and obs.shape == (4, core.observation_size)
    base = dict(vectorization_mode="vector_entry_point", split="test", perception=core, device="cpu")
    vec = gymnasium.make_vec("MnistGlimpse-v0", num_envs=4, max_glimpses=3, **base)  # numpy by default
    vec = wrappers.RecordEpisodeStatistics(wrappers.NormalizeObservation(wrappers.ClipAction(vec)))
    vec = wrappers.TransformObservation(vec, lambda o: o * 2.0, vec.observation_space)
    vec.reset(seed=0)
    for _ in range(3):
        obs, reward, terminated, truncated, info = vec.step(np.full((4, 2), 3.0, dtype=np.float32))  # clipped
    assert isinstance(obs, np.ndarray) and terminated.all() and isinstance(reward, np.ndarray)
    assert info["_episode"].all() and (info["episode"]["l"] == 3).all()
    torch_vec = gymnasium.make_vec("MnistGlimpse-v0", num_envs=2, array_type="torch", **base)
    assert isinstance(torch_vec.reset(seed=0)[0], torch.Tensor)
    with pytest.raises(ValueError, match="array_type='torch' is for the batched env"):
        gymnasium.make("MnistGlimpse-v0", split="test", perception=core, array_type="torch")


def test_a_project_with_its_own_envs_package_reaches_the_env_as_mnist_glimpse(tmp_path):
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "__init__.py").write_text("OWN = True\n")
    result = run_python(
        """
        import gymnasium as gym
        env = gym.make('mnist_glimpse:MnistGlimpse-v0', split='test', max_glimpses=2)
        env.reset(seed=0)
        for _ in range(2):
            _, _, terminated, _, info = env.step(env.action_space.sample())
        vec = gym.make_vec('MnistGlimpse-v0', num_envs=2, vectorization_mode='vector_entry_point', device='cpu')
        vec.reset(seed=0)
        import envs
        print(envs.OWN, terminated, info['label'] in range(10), type(vec).__module__)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True", "mnist_glimpse.vector_env"]


def test_both_names_load_one_copy_of_every_module(tmp_path):
    """``envs`` and ``mnist_glimpse`` are one package: the same module objects, classes and caches."""
    result = run_python(
        """
        import envs
        import mnist_glimpse
        import mnist_glimpse.perception
        from mnist_glimpse.vector_env import MnistGlimpseVectorEnv
        import envs.perception, envs.vector_env, envs.data
        from mnist_glimpse.data import load_mnist
        assert mnist_glimpse is envs
        assert mnist_glimpse.perception is envs.perception and MnistGlimpseVectorEnv is envs.vector_env.MnistGlimpseVectorEnv
        assert load_mnist is envs.data.load_mnist and mnist_glimpse.perception.__name__ == 'envs.perception'
        core = mnist_glimpse.perception.load_pretrained(shared=True)
        assert core is envs.perception.load_pretrained(shared=True)
        assert isinstance(core, envs.perception.PerceptionCore)
        print('ok')
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_mnist_glimpse_imported_first_makes_envs_its_alias(tmp_path):
    """Imported first as ``mnist_glimpse`` (here from a folder that links to this package), the package is
    also what ``import envs`` gives, when that ``envs`` is this package."""
    (tmp_path / "mnist_glimpse").symlink_to(Path(envs.__file__).parent, target_is_directory=True)
    result = run_python(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import mnist_glimpse
        assert mnist_glimpse.__file__.startswith({str(tmp_path)!r}), mnist_glimpse.__file__
        from mnist_glimpse.simulator import GlimpseSimulator
        import envs
        from envs.simulator import GlimpseSimulator as Again
        assert envs is mnist_glimpse and Again is GlimpseSimulator
        assert envs.simulator.__name__ == 'mnist_glimpse.simulator'
        print('ok')
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
