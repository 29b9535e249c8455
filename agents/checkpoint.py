"""Agent checkpoints: the policy and the perception core it was trained with, in one file.

``{"format", "agent", "glimpses", "policy": {"kind", "config", "state_dict"}, "core": <core checkpoint>,
**extra}``, tensors on the CPU, so a checkpoint written on a GPU loads anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agents.attention import AttentionNetwork
from agents.baselines import FixedSequence, RandomGlimpses
from agents.pixel_attention import PixelAttention
from agents.reinforce import GaussianAttentionPolicy
from envs.perception import PerceptionCore

AGENT_FORMAT = "mnist-glimpse/agent/v1"


def _policy_record(policy: nn.Module) -> dict[str, Any]:
    if callable(getattr(policy, "checkpoint_record", None)):  # e.g. agents.ppo.SB3GlimpsePolicy ("sb3-ppo")
        return policy.checkpoint_record()
    if isinstance(policy, GaussianAttentionPolicy):
        return {"kind": "gaussian-attention", "config": policy.config(), "state_dict": _cpu(policy.state_dict())}
    if isinstance(policy, PixelAttention):
        return {"kind": "pixel-attention", "config": policy.config(), "state_dict": _cpu(policy.state_dict())}
    if isinstance(policy, AttentionNetwork):
        config = {
            "observation_size": policy.observation_size,
            "hidden": policy.hidden,
            "glimpses": policy.glimpses,
            "step_bias": policy.step_bias,
        }
        return {"kind": "attention", "config": config, "state_dict": _cpu(policy.state_dict())}
    if isinstance(policy, FixedSequence):
        return {"kind": "fixed", "config": {"glimpses": policy.theta.shape[0]}, "state_dict": _cpu(policy.state_dict())}
    if isinstance(policy, RandomGlimpses):
        return {"kind": "random", "config": {}, "state_dict": {}}
    raise TypeError(f"Cannot save a policy of type {type(policy).__name__}.")


def _sb3_policy(config: dict[str, Any]) -> nn.Module:
    from agents.ppo import SB3GlimpsePolicy  # imports stable-baselines3: only for PPO checkpoints

    return SB3GlimpsePolicy.from_config(config)


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu() for key, value in state.items()}


def save_agent(
    path: str | os.PathLike, agent: str, policy: nn.Module, core: PerceptionCore, glimpses: int, **extra: Any
) -> None:
    """Save ``policy`` and ``core`` to ``path`` (parents created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"format": AGENT_FORMAT, "agent": agent, "glimpses": glimpses, "policy": _policy_record(policy),
         "core": core.checkpoint(), **extra},
        path,
    )


def load_agent(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, PerceptionCore, dict]:
    """Load ``(policy, core, checkpoint)`` from a file written by :func:`save_agent`, onto ``device``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Agent checkpoint {path} not found; train one with a train/ script (it writes DIR/checkpoint.pt).")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != AGENT_FORMAT:
        raise ValueError(f"{path} is not an agent checkpoint (expected format {AGENT_FORMAT!r}).")
    core = PerceptionCore.from_checkpoint(checkpoint["core"], source=f"{path} (core)").to(device).eval()
    record = checkpoint["policy"]
    builders = {
        "attention": lambda config: AttentionNetwork(**config),
        "pixel-attention": lambda config: PixelAttention(**config),
        "fixed": lambda config: FixedSequence(**config),
        "random": lambda config: RandomGlimpses(),
        "sb3-ppo": _sb3_policy,
        "gaussian-attention": lambda config: GaussianAttentionPolicy(**config),
    }
    if record["kind"] not in builders:
        raise ValueError(f"{path} holds a policy of unknown kind {record['kind']!r}; valid kinds are {list(builders)}.")
    policy = builders[record["kind"]](record["config"])
    try:
        policy.load_state_dict(record["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"{path}: the saved policy does not match its config: {error}") from None
    return policy.to(device).eval(), core, checkpoint
