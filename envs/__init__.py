"""mnist-glimpse environments.

Importing this package registers ``MnistGlimpse-v0`` with Gymnasium, lazily (string entry points:
torch is not imported until an environment is made)::

    import gymnasium, envs
    gymnasium.register_envs(envs)          # keeps linters from flagging the import as unused
    env = gymnasium.make("MnistGlimpse-v0")
    vec = gymnasium.make_vec("MnistGlimpse-v0", num_envs=1024, vectorization_mode="vector_entry_point")

``gymnasium.make("envs:MnistGlimpse-v0")`` works without the import statement.
"""

from __future__ import annotations

import importlib
from typing import Any

from gymnasium.envs.registration import register, registry

ENV_ID = "MnistGlimpse-v0"

if ENV_ID not in registry:
    register(
        id=ENV_ID,
        entry_point="envs.glimpse_env:MnistGlimpseEnv",
        vector_entry_point="envs.vector_env:MnistGlimpseVectorEnv",
    )

_LAZY = {
    "MnistGlimpseEnv": "envs.glimpse_env",
    "MnistGlimpseVectorEnv": "envs.vector_env",
    "PerceptionCore": "envs.perception",
    "PerceptionConfig": "envs.perception",
    "load_pretrained": "envs.perception",
    "Sampler": "envs.sampler",
    "SOHE": "envs.soft_ordering",
    "SoftOrdering": "envs.soft_ordering",
    "RecurrentSoftOrdering": "envs.soft_ordering",
    "load_mnist": "envs.data",
}

__all__ = ["ENV_ID", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'envs' has no attribute {name!r}")
