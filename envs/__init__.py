"""mnist-glimpse environments.

Importing this package registers ``MnistGlimpse-v0`` with Gymnasium, lazily (string entry points:
torch is not imported until an environment is made)::

    import gymnasium, envs
    gymnasium.register_envs(envs)          # keeps linters from flagging the import as unused
    env = gymnasium.make("MnistGlimpse-v0")
    vec = gymnasium.make_vec("MnistGlimpse-v0", num_envs=1024, vectorization_mode="vector_entry_point")

``gymnasium.make("envs:MnistGlimpse-v0")`` works without the import statement. A project that has
a package named ``envs`` of its own reaches the same package as ``mnist_glimpse`` (an alias the
install maps to this folder; every module here imports its siblings relatively)::

    env = gymnasium.make("mnist_glimpse:MnistGlimpse-v0")

Whichever name is imported first, the other one is an alias of it (:mod:`envs.aliases`): one copy
of every module, cache and class per process.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from gymnasium.envs.registration import register, registry

from .aliases import alias_package

alias_package(sys.modules[__name__])

ENV_ID = "MnistGlimpse-v0"

if ENV_ID not in registry:
    register(
        id=ENV_ID,
        entry_point=f"{__name__}.glimpse_env:MnistGlimpseEnv",
        vector_entry_point=f"{__name__}.vector_env:MnistGlimpseVectorEnv",
    )

_LAZY = {
    "MnistGlimpseEnv": ".glimpse_env",
    "MnistGlimpseVectorEnv": ".vector_env",
    "PerceptionCore": ".perception",
    "PerceptionConfig": ".perception",
    "load_pretrained": ".perception",
    "Sampler": ".sampler",
    "SOHE": ".soft_ordering",
    "SoftOrdering": ".soft_ordering",
    "RecurrentSoftOrdering": ".soft_ordering",
    "load_mnist": ".data",
}

__all__ = ["ENV_ID", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'envs' has no attribute {name!r}")
