"""Shared fixtures for the ``envs`` test suite.

Tests never depend on the weights of the packaged perception core (``envs/pretrained/perception.pt``
can be regenerated with other weights): they build their own :class:`PerceptionCore` from a fixed
torch seed, and use the packaged one only for relative checks.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from envs.perception import PerceptionConfig, PerceptionCore


def _make_core(seed: int = 0, config: PerceptionConfig | None = None, device: str = "cpu") -> PerceptionCore:
    """A freshly initialised core, deterministic in ``seed``; leaves torch's global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        core = PerceptionCore(config)
    return core.to(device)


ROOT = Path(__file__).resolve().parents[1]


def _load_script(path: str) -> ModuleType:
    """The script at ``path`` (relative to the repository root, e.g. ``"train/ppo.py"``) as a fresh
    module, its ``__main__`` block not run: its ``Args`` and ``main`` are then called directly."""
    name = "_script_" + path.removesuffix(".py").replace("/", "_").replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_script():
    """Loader ``load_script("train/ppo.py") -> module`` (:func:`_load_script`)."""
    return _load_script


@pytest.fixture
def make_core():
    """Factory ``make_core(seed=0, config=None, device="cpu") -> PerceptionCore``."""
    return _make_core


@pytest.fixture
def core() -> PerceptionCore:
    """A deterministic default-size core (seed 0) on the CPU."""
    return _make_core(0)


@pytest.fixture(scope="session")
def test_split():
    """The MNIST test split on the CPU (loaded once per process by ``envs.data``)."""
    from envs.data import load_mnist

    return load_mnist("test")
