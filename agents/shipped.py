"""The trained agent that ships with the package: ``envs/pretrained/agent.pt``.

It is the best recipe (``python train/differentiable.py --preset best --seed 0``): a
:class:`~agents.pixel_attention.PixelAttention` that remembers the pixels it read, on its own 16 x 32
``learned`` core (``envs/pretrained/perception_shipped_agent.pt``, the same weights as the core inside
``agent.pt``), not the environment's general packaged core. It acts in ``MnistGlimpse-v0`` made with
its core, the ``nearest`` read-out, the record observation and pixel actions (:data:`ENV_KWARGS`)::

    import gymnasium
    import envs
    from agents.shipped import ENV_KWARGS, act, load_shipped_agent

    policy, _, _ = load_shipped_agent()
    env = gymnasium.make("MnistGlimpse-v0", split="test", **ENV_KWARGS)
    obs, info = env.reset(seed=0)
    for t in range(25):
        obs, reward, terminated, truncated, info = env.step(act(policy, obs, t))

Its test accuracy (``nearest`` read-out, 10,000 test images) is in the checkpoint, under
``"test_accuracy"``, as recorded in ``experiments/results/studies/best_preset_one_command.json``; the
file's SHA-256 is checked at load, like the packaged cores'.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.checkpoint import load_agent
from envs.data import file_sha256
from envs.perception import PRETRAINED_PATH, SHIPPED_AGENT_CORE_PATH, PerceptionCore

AGENT_PATH = PRETRAINED_PATH.parent / "agent.pt"
AGENT_SHA256 = "284bcac0e765ef1dfad34e4eb739bf16491b7c6b7c6e6f58b2086fb7e612ca9c"

#: How the environment must be made for the shipped agent: on its own core (the one it was trained
#: with; the default packaged core is a general one), with the read-out, observation and actions it acts on.
ENV_KWARGS = {
    "perception": str(SHIPPED_AGENT_CORE_PATH),
    "sampler": "nearest",
    "obs_type": "record",
    "action_type": "pixel",
}


def load_shipped_agent(device: torch.device | str = "cpu") -> tuple[Any, PerceptionCore, dict]:
    """``(policy, core, checkpoint)`` of the shipped agent, in eval mode on ``device``, after checking
    the file's SHA-256."""
    path = Path(AGENT_PATH)
    if not path.is_file():
        raise FileNotFoundError(f"The shipped agent {path} is missing; reinstall the package.")
    digest = file_sha256(path)
    if digest != AGENT_SHA256:
        raise ValueError(
            f"The shipped agent {path} is damaged or replaced: SHA-256 {digest}, expected {AGENT_SHA256}. "
            "Reinstall the package (or restore the file from a clone)."
        )
    return load_agent(path, device)


@torch.no_grad()
def act(policy: Any, observation: dict[str, np.ndarray], step: int) -> int:
    """The pixel ``i * 28 + j`` the policy reads next, from one environment's record observation."""
    device = next(policy.parameters()).device
    batch = {key: torch.as_tensor(value, device=device)[None] for key, value in observation.items()}
    return int(policy.choose(batch, step)[0])
